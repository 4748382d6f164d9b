package kernels

// LoRAReductionChunks tells the tests how many token chunks the weight
// gradient [m,n] of `tokens` tokens is split into (lora_tn), and the bias
// gradient of n columns (lora_colsum); more than one means lora_reduce runs.
func LoRAReductionChunks(m, n, tokens int) (tn, colsum int) {
	tn, _ = tnChunks(m, n, tokens)
	colsum, _ = colsumChunks(n, tokens)
	return tn, colsum
}
