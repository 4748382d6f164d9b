// Package model holds the two transformer architectures PERK trains — GPT-2
// and Qwen2 — written as explicit per-block forward and backward passes over
// any nn.Backend, with LoRA adapters in PEFT's layout.
//
// The pieces:
//
//   - Config reads a Hugging Face config.json (model_type "gpt2" or "qwen2").
//   - Model holds the frozen base weights under their Hugging Face names. It
//     is built from a checkpoint directory (LoadModel), at random from a
//     Config (NewRandom), and saved back as a checkpoint (SaveModel).
//   - Adapter holds the LoRA tensors (A [r,in], B [out,r] per target module)
//     under PEFT's names; NewAdapter initialises them as PEFT does,
//     LoadAdapter and SaveAdapter read and write adapter_model.safetensors
//     with adapter_config.json.
//   - Model.Forward runs a packed batch (Batch: token ids with segment
//     boundaries; positions restart in each segment and no token attends
//     across segments) and returns a Pass holding the final hidden states.
//     Pass.Loss computes the weighted LM-head cross-entropy with the
//     Backend's fused op, and Pass.Backward propagates a loss cotangent (and
//     optionally a cotangent on the hidden states) to LoRA gradients, base
//     weight gradients (for full training of tiny models), per-token weight
//     gradients and the hidden-state cotangent.
//
// Activation memory follows a checkpoint Policy: PolicyNone keeps every
// block's internals from forward to backward; PolicyBlocks keeps only each
// block's input and recomputes the block during backward. The two give
// bit-identical gradients on a deterministic backend; Pass.Stats reports the
// peak bytes of activation tensors each one held.
package model
