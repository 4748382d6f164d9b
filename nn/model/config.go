package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
)

// The supported architectures, as config.json's model_type names them.
const (
	// GPT2 is OpenAI's GPT-2 (Hugging Face GPT2LMHeadModel).
	GPT2 = "gpt2"
	// Qwen2 is Qwen2 / Qwen2.5 (Hugging Face Qwen2ForCausalLM).
	Qwen2 = "qwen2"
)

// ConfigFile is the conventional name of a checkpoint's model configuration.
const ConfigFile = "config.json"

// Config is the architecture of a model, read from a Hugging Face
// config.json. Field names are the architecture-neutral ones; the comments
// give the config.json keys for GPT-2 / Qwen2.
type Config struct {
	// ModelType is GPT2 or Qwen2.
	ModelType string
	// Hidden is the model width (n_embd / hidden_size).
	Hidden int
	// Layers is the number of transformer blocks (n_layer / num_hidden_layers).
	Layers int
	// Heads is the number of query heads (n_head / num_attention_heads).
	Heads int
	// KVHeads is the number of key/value heads (Heads for GPT-2;
	// num_key_value_heads for Qwen2, grouped-query attention when smaller).
	KVHeads int
	// Intermediate is the MLP width (n_inner, default 4·n_embd /
	// intermediate_size).
	Intermediate int
	// Vocab is the vocabulary size (vocab_size).
	Vocab int
	// MaxPositions is the context length (n_positions, the size of GPT-2's
	// learned position table / max_position_embeddings, informative only
	// for Qwen2's rotary positions).
	MaxPositions int
	// NormEps is the normalisation epsilon (layer_norm_epsilon / rms_norm_eps).
	NormEps float64
	// RopeTheta is the rotary base (rope_theta; Qwen2 only).
	RopeTheta float64
	// TieWordEmbeddings makes the LM head share the token embedding
	// (tie_word_embeddings; default true for GPT-2, false for Qwen2).
	TieWordEmbeddings bool
	// Activation is the MLP activation: "gelu_new" (GPT-2, the tanh
	// approximation) or "silu" (Qwen2, inside SwiGLU).
	Activation string
}

// HeadDim is the per-head width Hidden/Heads.
func (c Config) HeadDim() int {
	if c.Heads <= 0 {
		return 0
	}
	return c.Hidden / c.Heads
}

// Validate checks that the sizes are positive and consistent.
func (c Config) Validate() error {
	switch c.ModelType {
	case GPT2, Qwen2:
	default:
		return fmt.Errorf("unsupported model_type %q (supported: %q, %q)", c.ModelType, GPT2, Qwen2)
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"hidden size", c.Hidden}, {"layer count", c.Layers}, {"head count", c.Heads},
		{"key/value head count", c.KVHeads}, {"intermediate size", c.Intermediate},
		{"vocabulary size", c.Vocab}, {"max positions", c.MaxPositions}} {
		if f.v <= 0 {
			return fmt.Errorf("%s model: %s %d must be positive", c.ModelType, f.name, f.v)
		}
	}
	if c.Hidden%c.Heads != 0 {
		return fmt.Errorf("%s model: hidden size %d is not a multiple of the head count %d", c.ModelType, c.Hidden, c.Heads)
	}
	if c.Heads%c.KVHeads != 0 {
		return fmt.Errorf("%s model: head count %d is not a multiple of the key/value head count %d", c.ModelType, c.Heads, c.KVHeads)
	}
	if !(c.NormEps >= 0) || math.IsInf(c.NormEps, 0) {
		return fmt.Errorf("%s model: normalisation epsilon %v must be finite and ≥ 0", c.ModelType, c.NormEps)
	}
	switch c.ModelType {
	case GPT2:
		if c.KVHeads != c.Heads {
			return fmt.Errorf("gpt2 model: %d key/value heads for %d heads; GPT-2 has no grouped-query attention", c.KVHeads, c.Heads)
		}
		if c.Activation != "gelu_new" && c.Activation != "gelu_pytorch_tanh" {
			return fmt.Errorf("gpt2 model: activation_function %q is not supported (want gelu_new)", c.Activation)
		}
	case Qwen2:
		if c.HeadDim()%2 != 0 {
			return fmt.Errorf("qwen2 model: head dimension %d must be even for rotary embeddings", c.HeadDim())
		}
		if !(c.RopeTheta > 0) || math.IsInf(c.RopeTheta, 0) {
			return fmt.Errorf("qwen2 model: rope_theta %v must be finite and positive", c.RopeTheta)
		}
		if c.Activation != "silu" {
			return fmt.Errorf("qwen2 model: hidden_act %q is not supported (want silu)", c.Activation)
		}
	}
	return nil
}

// LoadConfig reads a config.json, given as its path or as the checkpoint
// directory holding it.
func LoadConfig(path string) (Config, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, ConfigFile)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("model config: %w", err)
	}
	return ParseConfig(path, data)
}

// gpt2JSON is the subset of GPT2Config that the model uses; pointers tell
// absent keys (Hugging Face defaults apply) from zero values.
type gpt2JSON struct {
	NEmbd       *int     `json:"n_embd"`
	NLayer      *int     `json:"n_layer"`
	NHead       *int     `json:"n_head"`
	NInner      *int     `json:"n_inner"`
	NPositions  *int     `json:"n_positions"`
	VocabSize   *int     `json:"vocab_size"`
	LNEps       *float64 `json:"layer_norm_epsilon"`
	Activation  *string  `json:"activation_function"`
	Tie         *bool    `json:"tie_word_embeddings"`
	ScaleAttn   *bool    `json:"scale_attn_weights"`
	ScaleByIdx  *bool    `json:"scale_attn_by_inverse_layer_idx"`
	ReorderAttn *bool    `json:"reorder_and_upcast_attn"`
}

// qwen2JSON is the subset of Qwen2Config that the model uses.
type qwen2JSON struct {
	Hidden        *int            `json:"hidden_size"`
	Intermediate  *int            `json:"intermediate_size"`
	Layers        *int            `json:"num_hidden_layers"`
	Heads         *int            `json:"num_attention_heads"`
	KVHeads       *int            `json:"num_key_value_heads"`
	HeadDim       *int            `json:"head_dim"`
	MaxPos        *int            `json:"max_position_embeddings"`
	VocabSize     *int            `json:"vocab_size"`
	RMSEps        *float64        `json:"rms_norm_eps"`
	RopeTheta     *float64        `json:"rope_theta"`
	RopeScaling   json.RawMessage `json:"rope_scaling"`
	RopeParams    json.RawMessage `json:"rope_parameters"`
	HiddenAct     *string         `json:"hidden_act"`
	Tie           *bool           `json:"tie_word_embeddings"`
	SlidingWindow *bool           `json:"use_sliding_window"`
}

func intOr(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}

func floatOr(p *float64, def float64) float64 {
	if p == nil {
		return def
	}
	return *p
}

func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || bytes.Equal(t, []byte("null"))
}

// ParseConfig decodes the contents of a config.json; name (the file's path)
// labels errors. Keys the model does not use are ignored; absent keys take
// the Hugging Face defaults of the architecture. Settings the model cannot
// honour (an unsupported model_type, activation, rope scaling, sliding
// window attention) are errors.
func ParseConfig(name string, data []byte) (Config, error) {
	var head struct {
		ModelType *string `json:"model_type"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return Config{}, fmt.Errorf("model config %s: %w", name, err)
	}
	if head.ModelType == nil {
		return Config{}, fmt.Errorf("model config %s: no model_type", name)
	}
	var c Config
	switch *head.ModelType {
	case GPT2:
		var g gpt2JSON
		if err := json.Unmarshal(data, &g); err != nil {
			return Config{}, fmt.Errorf("model config %s: %w", name, err)
		}
		c = Config{
			ModelType:         GPT2,
			Hidden:            intOr(g.NEmbd, 768),
			Layers:            intOr(g.NLayer, 12),
			Heads:             intOr(g.NHead, 12),
			MaxPositions:      intOr(g.NPositions, 1024),
			Vocab:             intOr(g.VocabSize, 50257),
			NormEps:           floatOr(g.LNEps, 1e-5),
			Activation:        "gelu_new",
			TieWordEmbeddings: true,
		}
		c.KVHeads = c.Heads
		c.Intermediate = intOr(g.NInner, 4*c.Hidden)
		if g.Activation != nil {
			c.Activation = *g.Activation
		}
		if g.Tie != nil {
			c.TieWordEmbeddings = *g.Tie
		}
		if g.ScaleAttn != nil && !*g.ScaleAttn {
			return Config{}, fmt.Errorf("model config %s: scale_attn_weights=false is not supported", name)
		}
		if g.ScaleByIdx != nil && *g.ScaleByIdx {
			return Config{}, fmt.Errorf("model config %s: scale_attn_by_inverse_layer_idx=true is not supported", name)
		}
	case Qwen2:
		var q qwen2JSON
		if err := json.Unmarshal(data, &q); err != nil {
			return Config{}, fmt.Errorf("model config %s: %w", name, err)
		}
		c = Config{
			ModelType:    Qwen2,
			Hidden:       intOr(q.Hidden, 4096),
			Intermediate: intOr(q.Intermediate, 22016),
			Layers:       intOr(q.Layers, 32),
			Heads:        intOr(q.Heads, 32),
			MaxPositions: intOr(q.MaxPos, 32768),
			Vocab:        intOr(q.VocabSize, 151936),
			NormEps:      floatOr(q.RMSEps, 1e-6),
			RopeTheta:    floatOr(q.RopeTheta, 10000),
			Activation:   "silu",
		}
		c.KVHeads = intOr(q.KVHeads, c.Heads)
		if q.HiddenAct != nil {
			c.Activation = *q.HiddenAct
		}
		if q.Tie != nil {
			c.TieWordEmbeddings = *q.Tie
		}
		if q.HeadDim != nil && c.Heads > 0 && *q.HeadDim != c.Hidden/c.Heads {
			return Config{}, fmt.Errorf("model config %s: head_dim %d differs from hidden_size/num_attention_heads = %d; not supported", name, *q.HeadDim, c.Hidden/c.Heads)
		}
		if !isNull(q.RopeScaling) {
			return Config{}, fmt.Errorf("model config %s: rope_scaling %s is not supported", name, bytes.TrimSpace(q.RopeScaling))
		}
		if !isNull(q.RopeParams) {
			// Newer transformers releases move rope_theta into
			// rope_parameters; only the default (unscaled) rope is supported.
			var rp struct {
				Type  *string  `json:"rope_type"`
				Theta *float64 `json:"rope_theta"`
			}
			if err := json.Unmarshal(q.RopeParams, &rp); err != nil {
				return Config{}, fmt.Errorf("model config %s: rope_parameters: %w", name, err)
			}
			if rp.Type != nil && *rp.Type != "default" {
				return Config{}, fmt.Errorf("model config %s: rope_type %q is not supported", name, *rp.Type)
			}
			if rp.Theta != nil && q.RopeTheta == nil {
				c.RopeTheta = *rp.Theta
			}
		}
		if q.SlidingWindow != nil && *q.SlidingWindow {
			return Config{}, fmt.Errorf("model config %s: use_sliding_window=true is not supported", name)
		}
	default:
		return Config{}, fmt.Errorf("model config %s: unsupported model_type %q (supported: %q, %q)", name, *head.ModelType, GPT2, Qwen2)
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("model config %s: %w", name, err)
	}
	return c, nil
}

// MarshalHF encodes c as a Hugging Face config.json that transformers can
// load (GPT2LMHeadModel or Qwen2ForCausalLM, float32, dropout off).
func (c Config) MarshalHF() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var m map[string]any
	switch c.ModelType {
	case GPT2:
		m = map[string]any{
			"model_type":          GPT2,
			"architectures":       []string{"GPT2LMHeadModel"},
			"n_embd":              c.Hidden,
			"n_layer":             c.Layers,
			"n_head":              c.Heads,
			"n_inner":             c.Intermediate,
			"n_positions":         c.MaxPositions,
			"n_ctx":               c.MaxPositions,
			"vocab_size":          c.Vocab,
			"layer_norm_epsilon":  c.NormEps,
			"activation_function": c.Activation,
			"tie_word_embeddings": c.TieWordEmbeddings,
			"attn_pdrop":          0.0,
			"embd_pdrop":          0.0,
			"resid_pdrop":         0.0,
			"torch_dtype":         "float32",
		}
	case Qwen2:
		m = map[string]any{
			"model_type":              Qwen2,
			"architectures":           []string{"Qwen2ForCausalLM"},
			"hidden_size":             c.Hidden,
			"intermediate_size":       c.Intermediate,
			"num_hidden_layers":       c.Layers,
			"num_attention_heads":     c.Heads,
			"num_key_value_heads":     c.KVHeads,
			"max_position_embeddings": c.MaxPositions,
			"vocab_size":              c.Vocab,
			"rms_norm_eps":            c.NormEps,
			"rope_theta":              c.RopeTheta,
			"hidden_act":              c.Activation,
			"tie_word_embeddings":     c.TieWordEmbeddings,
			"use_sliding_window":      false,
			"attention_dropout":       0.0,
			"torch_dtype":             "float32",
		}
	}
	return json.MarshalIndent(m, "", "  ")
}
