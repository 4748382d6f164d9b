package model

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/nn/safetensors"
	"github.com/perkgo/perk/runtime"
)

// The published config.json of openai-community/gpt2 and Qwen/Qwen2.5-0.5B.
const (
	gpt2ConfigJSON = `{"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
 "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
 "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12,
 "n_layer": 12, "n_positions": 1024, "resid_pdrop": 0.1, "summary_activation": null,
 "summary_first_dropout": 0.1, "summary_proj_to_labels": true, "summary_type": "cls_index",
 "summary_use_proj": true, "task_specific_params": {"text-generation": {"do_sample": true, "max_length": 50}},
 "vocab_size": 50257}`
	qwenConfigJSON = `{"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
 "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
 "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 24, "model_type": "qwen2",
 "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
 "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
 "transformers_version": "4.40.1", "use_cache": true, "use_sliding_window": false, "vocab_size": 151936}`
)

func TestParseConfig(t *testing.T) {
	g, err := ParseConfig("gpt2/config.json", []byte(gpt2ConfigJSON))
	require.NoError(t, err)
	require.Equal(t, Config{ModelType: GPT2, Hidden: 768, Layers: 12, Heads: 12, KVHeads: 12, Intermediate: 3072,
		Vocab: 50257, MaxPositions: 1024, NormEps: 1e-5, Activation: "gelu_new", TieWordEmbeddings: true}, g)
	require.Equal(t, 64, g.HeadDim())

	q, err := ParseConfig("qwen/config.json", []byte(qwenConfigJSON))
	require.NoError(t, err)
	require.Equal(t, Config{ModelType: Qwen2, Hidden: 896, Layers: 24, Heads: 14, KVHeads: 2, Intermediate: 4864,
		Vocab: 151936, MaxPositions: 32768, NormEps: 1e-6, RopeTheta: 1e6, Activation: "silu", TieWordEmbeddings: true}, q)

	// Qwen2 defaults: untied, theta 10000; transformers v5 rope_parameters.
	q2, err := ParseConfig("c.json", []byte(`{"model_type":"qwen2","hidden_size":8,"intermediate_size":8,
		"num_hidden_layers":1,"num_attention_heads":2,"vocab_size":10,
		"rope_parameters":{"rope_type":"default","rope_theta":500000}}`))
	require.NoError(t, err)
	require.False(t, q2.TieWordEmbeddings)
	require.Equal(t, 2, q2.KVHeads)
	require.Equal(t, 500000.0, q2.RopeTheta)

	// Round trip through MarshalHF.
	for _, c := range []Config{g, q, tinyGPT2(2), tinyQwen2(2, false)} {
		data, err := c.MarshalHF()
		require.NoError(t, err)
		back, err := ParseConfig("x", data)
		require.NoError(t, err)
		require.Equal(t, c, back)
	}

	for _, bad := range []struct{ json, want string }{
		{`{"model_type":"llama","hidden_size":8}`, `bad/config.json: unsupported model_type "llama"`},
		{`{"n_embd":8}`, "bad/config.json: no model_type"},
		{`{"model_type":"gpt2","n_embd":"wide"}`, "bad/config.json"},
		{`{"model_type":"gpt2","n_embd":10,"n_head":4}`, "not a multiple"},
		{`{"model_type":"gpt2","activation_function":"relu"}`, "relu"},
		{`{"model_type":"qwen2","rope_scaling":{"type":"yarn","factor":4}}`, "rope_scaling"},
		{`{"model_type":"qwen2","use_sliding_window":true}`, "use_sliding_window"},
		{`{"model_type":"qwen2","num_attention_heads":6,"num_key_value_heads":4,"hidden_size":24}`, "key/value"},
		{`not json`, "bad/config.json"},
	} {
		_, err := ParseConfig("bad/config.json", []byte(bad.json))
		require.ErrorContains(t, err, bad.want, bad.json)
	}
}

// rawTensors reads every tensor of a safetensors file verbatim.
func rawTensors(t *testing.T, path string) []safetensors.Tensor {
	t.Helper()
	f, err := safetensors.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var out []safetensors.Tensor
	for _, n := range f.Names() {
		info, err := f.Info(n)
		require.NoError(t, err)
		b, err := f.Bytes(n)
		require.NoError(t, err)
		out = append(out, safetensors.Tensor{Name: n, Shape: info.Shape, RawDType: info.DType, Raw: slices.Clone(b)})
	}
	return out
}

func requireSameParams(t *testing.T, want, got *Model, conv func(float64) float64) {
	t.Helper()
	require.Equal(t, want.Params().Names(), got.Params().Names())
	gp := got.Params().Params()
	for i, p := range want.Params().Params() {
		require.Equal(t, p.Value.Shape(), gp[i].Value.Shape(), p.Name)
		w, g := f64(t, p.Value), f64(t, gp[i].Value)
		for j := range w {
			if conv(w[j]) != g[j] {
				t.Fatalf("%s[%d]: saved %v, loaded %v, want %v", p.Name, j, w[j], g[j], conv(w[j]))
			}
		}
	}
}

func TestCheckpointRoundTrip(t *testing.T) {
	for k, cfg := range []Config{tinyGPT2(2), tinyQwen2(2, false), tinyQwen2(1, true)} {
		t.Run(cfg.ModelType, func(t *testing.T) {
			m := randomModel(t, cfg, uint64(200+k))
			ident := func(x float64) float64 { return x }

			dir := filepath.Join(t.TempDir(), "f64")
			require.NoError(t, SaveModel(dir, m, SaveOptions{DType: runtime.F64}))
			back, err := LoadModel(dir, cpu.New(), runtime.F64)
			require.NoError(t, err)
			require.Equal(t, cfg, back.Config())
			requireSameParams(t, m, back, ident)
			if !cfg.TieWordEmbeddings {
				_, ok := back.Params().Get(lmHeadName)
				require.True(t, ok)
			}

			// F32 storage, sharded, loaded into an F32 model.
			dir = filepath.Join(t.TempDir(), "sharded")
			require.NoError(t, SaveModel(dir, m, SaveOptions{DType: runtime.F32, ShardBytes: 4096}))
			ix, err := safetensors.LoadIndex(filepath.Join(dir, safetensors.IndexFile))
			require.NoError(t, err)
			require.Greater(t, len(ix.Shards()), 1)
			m32, err := LoadModel(dir, cpu.New(), runtime.F32)
			require.NoError(t, err)
			require.Equal(t, runtime.F32, m32.DType())
			gp := m32.Params().Params()
			for i, p := range m.Params().Params() {
				w := f64(t, p.Value)
				g, err := gp[i].Value.F32()
				require.NoError(t, err)
				for j := range w {
					require.Equal(t, float32(w[j]), g[j], p.Name)
				}
			}

			// BF16 storage loaded into F64: exactly the rounded values.
			dir = filepath.Join(t.TempDir(), "bf16")
			require.NoError(t, SaveModel(dir, m, SaveOptions{DType: runtime.BF16}))
			mb, err := LoadModel(dir, cpu.New(), runtime.F64)
			require.NoError(t, err)
			requireSameParams(t, m, mb, func(x float64) float64 { return float64(safetensors.BF16ToF32(safetensors.F64ToBF16(x))) })
		})
	}
}

// TestLoadGPT2UnprefixedNames loads a GPT-2 file whose names lack the
// "transformer." prefix and that carries the attention-mask buffers.
func TestLoadGPT2UnprefixedNames(t *testing.T) {
	m := randomModel(t, tinyGPT2(2), 1)
	dir := t.TempDir()
	require.NoError(t, SaveModel(dir, m, SaveOptions{DType: runtime.F64}))
	path := filepath.Join(dir, safetensors.SingleFile)
	ts := rawTensors(t, path)
	for i := range ts {
		ts[i].Name = strings.TrimPrefix(ts[i].Name, "transformer.")
	}
	mask := make([]byte, 32*32)
	ts = append(ts,
		safetensors.Tensor{Name: "h.0.attn.bias", Shape: []int{1, 1, 32, 32}, RawDType: "U8", Raw: mask},
		safetensors.Tensor{Name: "h.0.attn.masked_bias", Shape: []int{}, DType: runtime.F32, F32: []float32{-1e4}})
	require.NoError(t, safetensors.Write(path, ts, nil))
	back, err := LoadModel(dir, cpu.New(), runtime.F64)
	require.NoError(t, err)
	requireSameParams(t, m, back, func(x float64) float64 { return x })
}

func TestLoadModelErrors(t *testing.T) {
	m := randomModel(t, tinyQwen2(1, false), 1)
	const victim = "model.layers.0.self_attn.k_proj.weight"
	fresh := func(t *testing.T) (string, string) {
		dir := t.TempDir()
		require.NoError(t, SaveModel(dir, m, SaveOptions{}))
		return dir, filepath.Join(dir, safetensors.SingleFile)
	}
	edit := func(t *testing.T, path string, fn func([]safetensors.Tensor) []safetensors.Tensor) {
		require.NoError(t, safetensors.Write(path, fn(rawTensors(t, path)), nil))
	}

	t.Run("missing tensor", func(t *testing.T) {
		dir, path := fresh(t)
		edit(t, path, func(ts []safetensors.Tensor) []safetensors.Tensor {
			return slices.DeleteFunc(ts, func(x safetensors.Tensor) bool { return x.Name == victim })
		})
		_, err := LoadModel(dir, cpu.New(), runtime.F64)
		require.ErrorContains(t, err, path)
		require.ErrorContains(t, err, "missing tensor "+victim)
	})
	t.Run("missing untied lm_head", func(t *testing.T) {
		dir, path := fresh(t)
		edit(t, path, func(ts []safetensors.Tensor) []safetensors.Tensor {
			return slices.DeleteFunc(ts, func(x safetensors.Tensor) bool { return x.Name == lmHeadName })
		})
		_, err := LoadModel(dir, cpu.New(), runtime.F32)
		require.ErrorContains(t, err, "missing tensor lm_head.weight")
	})
	t.Run("wrong shape", func(t *testing.T) {
		dir, path := fresh(t)
		edit(t, path, func(ts []safetensors.Tensor) []safetensors.Tensor {
			for i := range ts {
				if ts[i].Name == victim {
					ts[i].Shape = []int{ts[i].Shape[1], ts[i].Shape[0]}
				}
			}
			return ts
		})
		_, err := LoadModel(dir, cpu.New(), runtime.F64)
		require.ErrorContains(t, err, path)
		require.ErrorContains(t, err, "tensor "+victim+" has shape [16 8], want [8 16]")
	})
	t.Run("integer dtype", func(t *testing.T) {
		dir, path := fresh(t)
		edit(t, path, func(ts []safetensors.Tensor) []safetensors.Tensor {
			for i := range ts {
				if ts[i].Name == victim {
					ts[i].RawDType = "I32"
				}
			}
			return ts
		})
		_, err := LoadModel(dir, cpu.New(), runtime.F64)
		require.ErrorContains(t, err, "tensor "+victim+" has dtype I32")
	})
	t.Run("unsupported model_type", func(t *testing.T) {
		dir, _ := fresh(t)
		cpath := filepath.Join(dir, ConfigFile)
		require.NoError(t, os.WriteFile(cpath, []byte(`{"model_type":"mistral"}`), 0o644))
		_, err := LoadModel(dir, cpu.New(), runtime.F64)
		require.ErrorContains(t, err, cpath)
		require.ErrorContains(t, err, `"mistral"`)
	})
	t.Run("no config", func(t *testing.T) {
		dir, _ := fresh(t)
		require.NoError(t, os.Remove(filepath.Join(dir, ConfigFile)))
		_, err := LoadModel(dir, cpu.New(), runtime.F64)
		require.ErrorContains(t, err, ConfigFile)
	})
	t.Run("shard lacks listed tensor", func(t *testing.T) {
		dir := t.TempDir()
		require.NoError(t, SaveModel(dir, m, SaveOptions{ShardBytes: 2048}))
		ix, err := safetensors.LoadIndex(filepath.Join(dir, safetensors.IndexFile))
		require.NoError(t, err)
		shard := filepath.Join(dir, ix.WeightMap[victim])
		edit(t, shard, func(ts []safetensors.Tensor) []safetensors.Tensor {
			return slices.DeleteFunc(ts, func(x safetensors.Tensor) bool { return x.Name == victim })
		})
		_, err = LoadModel(dir, cpu.New(), runtime.F64)
		require.ErrorContains(t, err, victim)
		require.ErrorContains(t, err, shard)
	})
	t.Run("bad precision", func(t *testing.T) {
		dir, _ := fresh(t)
		_, err := LoadModel(dir, cpu.New(), runtime.BF16)
		require.ErrorContains(t, err, "want F32 or F64")
	})
}

func TestAdapterRoundTrip(t *testing.T) {
	for k, cfg := range []Config{tinyGPT2(2), tinyQwen2(2, false)} {
		t.Run(cfg.ModelType, func(t *testing.T) {
			m := randomModel(t, cfg, uint64(300+k))
			ad := randomAdapter(t, m, uint64(310+k), 0.1)
			ad.cfg.BaseModel = "tiny-" + cfg.ModelType
			dir := t.TempDir()
			require.NoError(t, SaveAdapter(dir, ad, runtime.F64))

			var j map[string]any
			data, err := os.ReadFile(filepath.Join(dir, AdapterConfigFile))
			require.NoError(t, err)
			require.NoError(t, json.Unmarshal(data, &j))
			require.Equal(t, "LORA", j["peft_type"])
			require.Equal(t, "CAUSAL_LM", j["task_type"])
			require.Equal(t, "none", j["bias"])
			require.Equal(t, true, j["use_rslora"])
			require.Equal(t, 3.0, j["r"])
			require.Equal(t, 6.0, j["lora_alpha"])
			require.Equal(t, 0.1, j["lora_dropout"])
			require.Equal(t, cfg.ModelType == GPT2, j["fan_in_fan_out"])
			require.Equal(t, "tiny-"+cfg.ModelType, j["base_model_name_or_path"])

			back, err := LoadAdapter(dir, m)
			require.NoError(t, err)
			want := ad.Config()
			slices.Sort(want.TargetModules)
			require.Equal(t, want, back.Config())
			require.Equal(t, ad.Params().Names(), back.Params().Names())
			bp := back.Params().Params()
			for i, p := range ad.Params().Params() {
				require.Equal(t, f64(t, p.Value), f64(t, bp[i].Value), p.Name)
			}
		})
	}
}

func TestLoadAdapterErrors(t *testing.T) {
	m := randomModel(t, tinyGPT2(2), 1)
	ad := randomAdapter(t, m, 2, 0)
	const victim = "base_model.model.transformer.h.1.mlp.c_fc.lora_B.weight"
	fresh := func(t *testing.T) (dir, cfgPath, wPath string) {
		dir = t.TempDir()
		require.NoError(t, SaveAdapter(dir, ad, runtime.F32))
		return dir, filepath.Join(dir, AdapterConfigFile), filepath.Join(dir, AdapterWeightsFile)
	}
	setConfig := func(t *testing.T, path, key string, val any) {
		var j map[string]any
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(data, &j))
		j[key] = val
		data, err = json.Marshal(j)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, data, 0o644))
	}
	editW := func(t *testing.T, path string, fn func([]safetensors.Tensor) []safetensors.Tensor) {
		require.NoError(t, safetensors.Write(path, fn(rawTensors(t, path)), nil))
	}

	t.Run("target absent from model", func(t *testing.T) {
		dir, cpath, _ := fresh(t)
		setConfig(t, cpath, "target_modules", []string{"c_attn", "q_proj"})
		_, err := LoadAdapter(dir, m)
		require.ErrorContains(t, err, cpath)
		require.ErrorContains(t, err, `"q_proj" is absent`)
	})
	t.Run("tensor for a module the model lacks", func(t *testing.T) {
		dir, _, wpath := fresh(t)
		extra := "base_model.model.transformer.h.7.attn.c_attn.lora_A.weight"
		editW(t, wpath, func(ts []safetensors.Tensor) []safetensors.Tensor {
			return append(ts, safetensors.Tensor{Name: extra, Shape: []int{3, 16}, DType: runtime.F32, F32: make([]float32, 48)})
		})
		_, err := LoadAdapter(dir, m)
		require.ErrorContains(t, err, wpath)
		require.ErrorContains(t, err, extra)
	})
	t.Run("missing tensor", func(t *testing.T) {
		dir, _, wpath := fresh(t)
		editW(t, wpath, func(ts []safetensors.Tensor) []safetensors.Tensor {
			return slices.DeleteFunc(ts, func(x safetensors.Tensor) bool { return x.Name == victim })
		})
		_, err := LoadAdapter(dir, m)
		require.ErrorContains(t, err, wpath)
		require.ErrorContains(t, err, "missing tensor "+victim)
	})
	t.Run("wrong rank", func(t *testing.T) {
		dir, cpath, _ := fresh(t)
		setConfig(t, cpath, "r", 4)
		_, err := LoadAdapter(dir, m)
		require.ErrorContains(t, err, "has shape [3 16], want [4 16]")
	})
	for _, bad := range []struct {
		key  string
		val  any
		want string
	}{
		{"peft_type", "PREFIX_TUNING", "peft_type"},
		{"bias", "all", "bias"},
		{"modules_to_save", []string{"lm_head"}, "modules_to_save"},
		{"rank_pattern", map[string]int{"c_fc": 8}, "rank_pattern"},
		{"use_dora", true, "use_dora"},
		{"lora_dropout", 1.5, "lora_dropout"},
		{"target_modules", nil, "target_modules"},
	} {
		t.Run("config "+bad.key, func(t *testing.T) {
			dir, cpath, _ := fresh(t)
			setConfig(t, cpath, bad.key, bad.val)
			_, err := LoadAdapter(dir, m)
			require.ErrorContains(t, err, cpath)
			require.ErrorContains(t, err, bad.want)
		})
	}
	t.Run("regex and all-linear targets", func(t *testing.T) {
		dir, cpath, _ := fresh(t)
		setConfig(t, cpath, "target_modules", `.*\.(c_attn|c_proj|c_fc)`)
		back, err := LoadAdapter(dir, m)
		require.NoError(t, err)
		require.Equal(t, ad.Modules(), back.Modules())
		setConfig(t, cpath, "target_modules", AllLinear)
		back, err = LoadAdapter(dir, m)
		require.NoError(t, err)
		require.Equal(t, ad.Modules(), back.Modules())
	})
	t.Run("float32 storage", func(t *testing.T) {
		dir, _, _ := fresh(t)
		back, err := LoadAdapter(dir, m)
		require.NoError(t, err)
		bp := back.Params().Params()
		for i, p := range ad.Params().Params() {
			for j, v := range f64(t, p.Value) {
				require.Equal(t, float64(float32(v)), f64(t, bp[i].Value)[j])
			}
		}
	})
}
