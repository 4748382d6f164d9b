// Package perk is the PERK method: test-time learning of a long context into
// a LoRA adapter, and the meta-training that makes it work.
//
// The pieces, in the order data flows through them:
//
//   - Records (ReadRecords) are JSONL problems {id, context, question,
//     answer, support}. An Encoder turns one into an Example: the context
//     segments packed into one batch ("doc_{i}: {text}" + EOS per segment,
//     positions restarting per segment, the "doc_{i}:" tokens not targets)
//     and the outer sequence (prompt + " " + target + EOS, loss on the
//     tokens after the prompt).
//   - Params are what meta-training learns: the LoRA initialisation φ₀,
//     per-step per-tensor inner learning rates (LearnedLRs) and the
//     token-weighting network ω (Weighting), w = softplus_β(MLP_ω(h)) of
//     the frozen base model's final hidden states.
//   - An Engine runs the inner loop (T steps of AdamW or SGD on the weighted
//     causal-LM loss of the segments, gradient accumulated over groups of
//     segments) and computes the meta-gradient of the outer loss with an
//     adjoint sweep that keeps only (φ_t, m_t, v_t) per step. The
//     second-order terms come from a SecondOrder mode: finite differences
//     of the inner gradient (FiniteDifference) or none (FirstOrder).
//   - A Trainer applies outer AdamW steps (warmup + cosine schedule,
//     global-norm clipping, accumulation over examples) and writes and
//     resumes checkpoints: a PEFT adapter directory for φ₀ plus
//     perk_state.safetensors for the rest.
package perk
