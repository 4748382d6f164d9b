#!/usr/bin/env python3
"""Golden fixtures for the Go GPT-2 / Qwen2 + LoRA implementation (nn/model).

An independent PyTorch reference, written from the published model
definitions (Hugging Face GPT-2 / Qwen2, PEFT LoRA), computed in float64
throughout. It needs only torch and numpy: the models and the safetensors
reader/writer are written out here.

For each arch in {gpt2, qwen2} it writes <out>/<arch>/:
  config.json                HF config of a tiny model
  model.safetensors          random base weights, HF names, F64
  adapter_config.json        PEFT LoRA config (r=4, alpha=8)
  adapter_model.safetensors  random LoRA A and (non-zero) B, PEFT names, F64
  expected.safetensors       a packed batch, its logits, loss and gradients

See tools/golden/README.md for the contract. Random numbers come from
numpy's legacy RandomState (a stream numpy promises not to change), so the
fixtures are reproducible byte for byte on the same torch/numpy builds.

Usage: /usr/bin/python3 tools/golden/gen.py [--out nn/model/testdata/golden]
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

GENERATOR_VERSION = "perk-golden/1"

DT = torch.float64

# The packed batch: three segments of these lengths (T = 16).
SEG_LENS = [1, 6, 9]
IGNORE = -100

LORA_R = 4
LORA_ALPHA = 8
LORA_SCALE = LORA_ALPHA / LORA_R

LOSS_DEFINITION = (
    "CE_k = logsumexp(logits[k,:]) - logits[k, labels[k]]; "
    "loss = sum over k with labels[k] != -100 of weights[k]*CE_k, "
    "divided by the number of k with labels[k] != -100 (the weights do not "
    "enter the denominator); loss_unweighted is the same with weights == 1. "
    "labels[k] = input_ids[k+1] when k+1 is in the same segment as k, else -100. "
    "grad.<name> = d loss / d <name> for every LoRA tensor; grad.weights = d loss / d weights."
)

GPT2_CONFIG = {
    "model_type": "gpt2",
    "n_embd": 32,
    "n_layer": 2,
    "n_head": 4,
    "n_positions": 64,
    "vocab_size": 61,
    "layer_norm_epsilon": 1e-5,
    "activation_function": "gelu_new",
    "tie_word_embeddings": True,
}

QWEN2_CONFIG = {
    "model_type": "qwen2",
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 64,
    "vocab_size": 61,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
}

GPT2_TARGETS = ["c_attn", "c_proj", "c_fc"]
QWEN2_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# ---------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------

_ST_DTYPES = {
    torch.float64: ("F64", "<f8"),
    torch.float32: ("F32", "<f4"),
    torch.int64: ("I64", "<i8"),
}
_ST_NP = {"F64": "<f8", "F32": "<f4", "I64": "<i8"}


def save_safetensors(path, tensors, metadata=None):
    """Write tensors (name -> torch tensor) in safetensors format.

    Tensors are laid out contiguously in name order; the JSON header is
    padded with spaces to a multiple of 8 bytes.
    """
    header = {}
    chunks = []
    off = 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        st, npd = _ST_DTYPES[t.dtype]
        b = t.numpy().astype(npd, copy=False).tobytes(order="C")
        header[name] = {"dtype": st, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        chunks.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hjson = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
    hjson += b" " * ((-len(hjson)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in chunks:
            f.write(b)


def load_safetensors(path):
    """Read a safetensors file: returns (name -> torch tensor, metadata)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    data = raw[8 + n :]
    out = {}
    end_max = 0
    for name, e in header.items():
        b, en = e["data_offsets"]
        end_max = max(end_max, en)
        arr = np.frombuffer(data[b:en], dtype=_ST_NP[e["dtype"]]).reshape(e["shape"])
        out[name] = torch.from_numpy(arr.copy())
    assert end_max == len(data), f"{path}: data buffer not fully covered"
    return out, meta


# ---------------------------------------------------------------------------
# random numbers (numpy legacy RandomState: a stable stream)
# ---------------------------------------------------------------------------

class Rng:
    def __init__(self, seed):
        self.rs = np.random.RandomState(seed)

    def normal(self, shape, std, mean=0.0):
        return torch.from_numpy(mean + std * self.rs.standard_normal(size=shape)).to(DT)

    def uniform(self, shape, lo, hi):
        return torch.from_numpy(self.rs.uniform(lo, hi, size=shape)).to(DT)

    def ints(self, n, hi):
        return torch.from_numpy(self.rs.randint(0, hi, size=n).astype(np.int64))


# ---------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------

def packed_batch(rng, vocab):
    """input_ids, cu_seqlens, positions, labels, weights, segment ids."""
    T = sum(SEG_LENS)
    ids = rng.ints(T, vocab)
    cu = [0]
    for L in SEG_LENS:
        cu.append(cu[-1] + L)
    seg = torch.empty(T, dtype=torch.int64)
    pos = torch.empty(T, dtype=torch.int64)
    labels = torch.full((T,), IGNORE, dtype=torch.int64)
    for s in range(len(SEG_LENS)):
        a, b = cu[s], cu[s + 1]
        seg[a:b] = s
        pos[a:b] = torch.arange(b - a)
        for k in range(a, b - 1):
            labels[k] = ids[k + 1]
    weights = rng.uniform((T,), 0.5, 1.5)
    return ids, torch.tensor(cu, dtype=torch.int64), pos, labels, weights, seg


def segment_mask(seg):
    """allowed[i, j]: j is in i's segment and j <= i."""
    T = seg.shape[0]
    same = seg[:, None] == seg[None, :]
    causal = torch.arange(T)[None, :] <= torch.arange(T)[:, None]
    return same & causal


def attention(q, k, v, allowed):
    """q [T,H,hd], k/v [T,H,hd] (already expanded), allowed [T,T] -> [T,H*hd]."""
    T, H, hd = q.shape
    scores = torch.einsum("ihd,jhd->hij", q, k) / math.sqrt(hd)
    scores = scores.masked_fill(~allowed[None, :, :], float("-inf"))
    p = torch.softmax(scores, dim=-1)
    o = torch.einsum("hij,jhd->ihd", p, v)
    return o.reshape(T, H * hd)


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def layer_norm(x, w, b, eps):
    mu = x.mean(dim=-1, keepdim=True)
    var = (x - mu).pow(2).mean(dim=-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * w


def lora_term(x, lora, prefix):
    """(alpha/r) * B(A(x)) with A [r,in], B [out,r]; None if not targeted."""
    a = lora.get(prefix + ".lora_A.weight")
    if a is None:
        return None
    b = lora[prefix + ".lora_B.weight"]
    return LORA_SCALE * ((x @ a.t()) @ b.t())


def token_ce(logits, labels):
    """Per-token cross entropy (0 where label == -100) and the labelled mask."""
    mask = labels != IGNORE
    safe = labels.clamp(min=0)
    lse = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(1, safe[:, None])[:, 0]
    ce = torch.where(mask, lse - picked, torch.zeros_like(lse))
    return ce, mask


def loss_of(logits, labels, weights):
    ce, mask = token_ce(logits, labels)
    n = mask.sum()
    return (weights * ce).sum() / n


# ---------------------------------------------------------------------------
# GPT-2
# ---------------------------------------------------------------------------

def gpt2_weights(cfg, rng):
    d, V, P, L = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"], cfg["n_layer"]
    w = {}
    w["transformer.wte.weight"] = rng.normal((V, d), 0.02 * 15)
    w["transformer.wpe.weight"] = rng.normal((P, d), 0.02 * 5)
    for i in range(L):
        p = f"transformer.h.{i}."
        w[p + "ln_1.weight"] = rng.normal((d,), 0.1, mean=1.0)
        w[p + "ln_1.bias"] = rng.normal((d,), 0.05)
        w[p + "attn.c_attn.weight"] = rng.normal((d, 3 * d), 0.02 * 10)
        w[p + "attn.c_attn.bias"] = rng.normal((3 * d,), 0.05)
        w[p + "attn.c_proj.weight"] = rng.normal((d, d), 0.02 * 8)
        w[p + "attn.c_proj.bias"] = rng.normal((d,), 0.05)
        w[p + "ln_2.weight"] = rng.normal((d,), 0.1, mean=1.0)
        w[p + "ln_2.bias"] = rng.normal((d,), 0.05)
        w[p + "mlp.c_fc.weight"] = rng.normal((d, 4 * d), 0.02 * 10)
        w[p + "mlp.c_fc.bias"] = rng.normal((4 * d,), 0.05)
        w[p + "mlp.c_proj.weight"] = rng.normal((4 * d, d), 0.02 * 5)
        w[p + "mlp.c_proj.bias"] = rng.normal((d,), 0.05)
    w["transformer.ln_f.weight"] = rng.normal((d,), 0.1, mean=1.0)
    w["transformer.ln_f.bias"] = rng.normal((d,), 0.05)
    return w


def gpt2_lora_shapes(cfg):
    """PEFT name prefix (without .lora_X.weight) -> (in, out)."""
    d = cfg["n_embd"]
    out = {}
    for i in range(cfg["n_layer"]):
        p = f"base_model.model.transformer.h.{i}."
        out[p + "attn.c_attn"] = (d, 3 * d)
        out[p + "attn.c_proj"] = (d, d)
        out[p + "mlp.c_fc"] = (d, 4 * d)
        out[p + "mlp.c_proj"] = (4 * d, d)
    return out


def gpt2_forward(cfg, w, lora, ids, pos, seg):
    d, H = cfg["n_embd"], cfg["n_head"]
    hd = d // H
    eps = cfg["layer_norm_epsilon"]
    T = ids.shape[0]
    allowed = segment_mask(seg)

    def conv1d(x, name):
        # HF Conv1D: weight [in, out], y = x W + b; PEFT LoRA adds s*B(A(x)).
        y = x @ w[name + ".weight"] + w[name + ".bias"]
        t = lora_term(x, lora, "base_model.model." + name)
        return y if t is None else y + t

    h = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][pos]
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        a = layer_norm(h, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        qkv = conv1d(a, p + "attn.c_attn")
        q, k, v = qkv.split(d, dim=-1)
        o = attention(q.reshape(T, H, hd), k.reshape(T, H, hd), v.reshape(T, H, hd), allowed)
        h = h + conv1d(o, p + "attn.c_proj")
        m = layer_norm(h, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        f = gelu_new(conv1d(m, p + "mlp.c_fc"))
        h = h + conv1d(f, p + "mlp.c_proj")
    h = layer_norm(h, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], eps)
    return h @ w["transformer.wte.weight"].t()  # tied head


# ---------------------------------------------------------------------------
# Qwen2
# ---------------------------------------------------------------------------

def qwen2_weights(cfg, rng):
    d, V, L = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    I = cfg["intermediate_size"]
    Hq, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = d // Hq
    w = {}
    w["model.embed_tokens.weight"] = rng.normal((V, d), 0.02 * 25)
    for i in range(L):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = rng.normal((d,), 0.1, mean=1.0)
        w[p + "self_attn.q_proj.weight"] = rng.normal((Hq * hd, d), 0.02 * 10)
        w[p + "self_attn.q_proj.bias"] = rng.normal((Hq * hd,), 0.1)
        w[p + "self_attn.k_proj.weight"] = rng.normal((Hkv * hd, d), 0.02 * 10)
        w[p + "self_attn.k_proj.bias"] = rng.normal((Hkv * hd,), 0.1)
        w[p + "self_attn.v_proj.weight"] = rng.normal((Hkv * hd, d), 0.02 * 10)
        w[p + "self_attn.v_proj.bias"] = rng.normal((Hkv * hd,), 0.1)
        w[p + "self_attn.o_proj.weight"] = rng.normal((d, Hq * hd), 0.02 * 8)
        w[p + "post_attention_layernorm.weight"] = rng.normal((d,), 0.1, mean=1.0)
        w[p + "mlp.gate_proj.weight"] = rng.normal((I, d), 0.02 * 10)
        w[p + "mlp.up_proj.weight"] = rng.normal((I, d), 0.02 * 10)
        w[p + "mlp.down_proj.weight"] = rng.normal((d, I), 0.02 * 8)
    w["model.norm.weight"] = rng.normal((d,), 0.1, mean=1.0)
    w["lm_head.weight"] = rng.normal((V, d), 0.02 * 10)
    return w


def qwen2_lora_shapes(cfg):
    d, I = cfg["hidden_size"], cfg["intermediate_size"]
    Hq, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = d // Hq
    out = {}
    for i in range(cfg["num_hidden_layers"]):
        p = f"base_model.model.model.layers.{i}."
        out[p + "self_attn.q_proj"] = (d, Hq * hd)
        out[p + "self_attn.k_proj"] = (d, Hkv * hd)
        out[p + "self_attn.v_proj"] = (d, Hkv * hd)
        out[p + "self_attn.o_proj"] = (Hq * hd, d)
        out[p + "mlp.gate_proj"] = (d, I)
        out[p + "mlp.up_proj"] = (d, I)
        out[p + "mlp.down_proj"] = (I, d)
    return out


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope(x, pos, theta):
    """x [T,H,hd]; rotate-half RoPE at integer positions pos [T]."""
    hd = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=DT) / hd))
    freqs = pos.to(DT)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]
    return x * cos + rotate_half(x) * sin


def qwen2_forward(cfg, w, lora, ids, pos, seg):
    d = cfg["hidden_size"]
    Hq, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = d // Hq
    rep = Hq // Hkv
    eps = cfg["rms_norm_eps"]
    theta = cfg["rope_theta"]
    T = ids.shape[0]
    allowed = segment_mask(seg)

    def linear(x, name, bias=False):
        # nn.Linear: weight [out, in], y = x W^T (+ b); PEFT LoRA adds s*B(A(x)).
        y = x @ w[name + ".weight"].t()
        if bias:
            y = y + w[name + ".bias"]
        t = lora_term(x, lora, "base_model.model." + name)
        return y if t is None else y + t

    h = w["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = rms_norm(h, w[p + "input_layernorm.weight"], eps)
        q = linear(x, p + "self_attn.q_proj", bias=True).reshape(T, Hq, hd)
        k = linear(x, p + "self_attn.k_proj", bias=True).reshape(T, Hkv, hd)
        v = linear(x, p + "self_attn.v_proj", bias=True).reshape(T, Hkv, hd)
        q, k = rope(q, pos, theta), rope(k, pos, theta)
        # GQA: kv head j serves query heads j*rep .. (j+1)*rep-1.
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        o = attention(q, k, v, allowed)
        h = h + linear(o, p + "self_attn.o_proj")
        x = rms_norm(h, w[p + "post_attention_layernorm.weight"], eps)
        g = linear(x, p + "mlp.gate_proj")
        u = linear(x, p + "mlp.up_proj")
        h = h + linear(torch.nn.functional.silu(g) * u, p + "mlp.down_proj")
    h = rms_norm(h, w["model.norm.weight"], eps)
    return h @ w["lm_head.weight"].t()


# ---------------------------------------------------------------------------
# generation + checks
# ---------------------------------------------------------------------------

ARCHS = {
    "gpt2": dict(config=GPT2_CONFIG, seed=1234, weights=gpt2_weights, lora_shapes=gpt2_lora_shapes,
                 forward=gpt2_forward, targets=GPT2_TARGETS, fan_in_fan_out=True),
    "qwen2": dict(config=QWEN2_CONFIG, seed=5678, weights=qwen2_weights, lora_shapes=qwen2_lora_shapes,
                  forward=qwen2_forward, targets=QWEN2_TARGETS, fan_in_fan_out=False),
}


def make_lora(shapes, rng):
    lora = {}
    for prefix in sorted(shapes):
        fin, fout = shapes[prefix]
        lora[prefix + ".lora_A.weight"] = rng.normal((LORA_R, fin), 1.0 / math.sqrt(fin))
        # Non-zero B (PEFT initialises it to zero) so that A gets gradient too.
        lora[prefix + ".lora_B.weight"] = rng.normal((fout, LORA_R), 0.02 * 5)
    return lora


def check_builtin_equivalents():
    """Cross-check hand-written pieces against torch built-ins."""
    x = torch.linspace(-6, 6, 97, dtype=DT)
    F = torch.nn.functional
    assert torch.allclose(gelu_new(x), F.gelu(x, approximate="tanh"), rtol=0, atol=1e-14)
    xs = torch.randn(5, 32, dtype=DT, generator=torch.Generator().manual_seed(0))
    wv, bv = torch.rand(32, dtype=DT) + 0.5, torch.rand(32, dtype=DT)
    assert torch.allclose(layer_norm(xs, wv, bv, 1e-5), F.layer_norm(xs, (32,), wv, bv, 1e-5), rtol=0, atol=1e-12)
    logits = torch.randn(7, 11, dtype=DT, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([3, -100, 0, 10, 5, -100, 2])
    ce, _ = token_ce(logits, labels)
    ref = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="none")
    assert torch.allclose(ce, ref, rtol=0, atol=1e-13)
    # RoPE: <rope(q, m), rope(k, n)> depends only on m - n, and preserves norms.
    q = torch.randn(1, 1, 8, dtype=DT, generator=torch.Generator().manual_seed(2))
    k = torch.randn(1, 1, 8, dtype=DT, generator=torch.Generator().manual_seed(3))
    dot = lambda m, n: (rope(q, torch.tensor([m]), 1e4) * rope(k, torch.tensor([n]), 1e4)).sum().item()
    assert abs(dot(7, 3) - dot(4, 0)) < 1e-12 and abs(dot(9, 9) - (q * k).sum().item()) < 1e-12
    assert abs(rope(q, torch.tensor([5]), 1e4).norm() - q.norm()) < 1e-12


def generate(arch, out_root):
    spec = ARCHS[arch]
    cfg = spec["config"]
    V = cfg["vocab_size"]
    rng = Rng(spec["seed"])
    w = spec["weights"](cfg, rng)
    lora = make_lora(spec["lora_shapes"](cfg), rng)
    ids, cu, pos, labels, weights, seg = packed_batch(rng, V)
    fwd = spec["forward"]
    T = ids.shape[0]

    # Forward + backward on the packed batch.
    lora_p = {k: v.clone().requires_grad_(True) for k, v in lora.items()}
    wts = weights.clone().requires_grad_(True)
    logits = fwd(cfg, w, lora_p, ids, pos, seg)
    loss = loss_of(logits, labels, wts)
    names = sorted(lora_p)
    grads = torch.autograd.grad(loss, [lora_p[n] for n in names] + [wts])
    grad = {"grad." + n: g for n, g in zip(names, grads[:-1])}
    grad["grad.weights"] = grads[-1]
    logits = logits.detach()
    loss = loss.detach()
    loss_unw = loss_of(logits, labels, torch.ones_like(weights))

    # ---- sanity checks ----
    assert logits.shape == (T, V) and torch.isfinite(logits).all()
    assert all(torch.isfinite(g).all() for g in grad.values())
    for n in names:
        assert grad["grad." + n].abs().max() > 0, f"{arch}: zero gradient for {n}"
    base_logits = fwd(cfg, w, {}, ids, pos, seg)
    assert (base_logits - logits).abs().max() > 1e-3, f"{arch}: LoRA has no visible effect"

    # (a) packed == per-segment (no cross-segment leakage), logits and loss.
    n_lab = int((labels != IGNORE).sum())
    seg_sum = torch.zeros((), dtype=DT)
    for s in range(len(SEG_LENS)):
        a, b = int(cu[s]), int(cu[s + 1])
        sl = fwd(cfg, w, lora, ids[a:b], torch.arange(b - a), torch.zeros(b - a, dtype=torch.int64))
        err = (sl - logits[a:b]).abs().max().item()
        assert err < 1e-12, f"{arch}: segment {s} logits differ from packed by {err}"
        ce, _ = token_ce(sl, labels[a:b])
        seg_sum = seg_sum + (weights[a:b] * ce).sum()
    err = abs(seg_sum.item() / n_lab - loss.item())
    assert err < 1e-13, f"{arch}: packed loss != per-segment sum ({err})"

    # (a') perturbing a token in segment 1 changes nothing in segments 0 and 2.
    ids2 = ids.clone()
    ids2[cu[1]] = (ids2[cu[1]] + 1) % V
    l2 = fwd(cfg, w, lora, ids2, pos, seg)
    assert torch.equal(l2[: cu[1]], logits[: cu[1]]) and torch.equal(l2[cu[2]:], logits[cu[2]:])

    # (b) central finite differences on a few gradient entries.
    def loss_at(name, idx, delta):
        lp = {k: v.clone() for k, v in lora.items()}
        lp[name][idx] += delta
        return loss_of(fwd(cfg, w, lp, ids, pos, seg), labels, weights).item()

    eps = 1e-6
    fd_worst = 0.0
    probes = []
    for n in names:
        if ".0." in n or n == names[-1]:
            probes.append((n, (0, 1) if n.endswith("lora_A.weight") else (2, 3)))
    probes = probes[:4] + probes[-2:]
    for n, idx in probes:
        fd = (loss_at(n, idx, eps) - loss_at(n, idx, -eps)) / (2 * eps)
        an = grad["grad." + n][idx].item()
        assert abs(fd - an) <= 1e-7 + 1e-6 * abs(an), f"{arch}: FD check {n}{idx}: fd={fd} autograd={an}"
        fd_worst = max(fd_worst, abs(fd - an))
    # grad.weights is CE_k / n_lab on labelled tokens, 0 elsewhere.
    ce_all, mask = token_ce(logits, labels)
    assert torch.allclose(grad["grad.weights"], ce_all / n_lab, rtol=0, atol=1e-15)
    assert (grad["grad.weights"][~mask] == 0).all()

    # ---- write ----
    d = os.path.join(out_root, arch)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    save_safetensors(os.path.join(d, "model.safetensors"), w, {"format": "pt"})
    adapter_cfg = {
        "peft_type": "LORA",
        "r": LORA_R,
        "lora_alpha": LORA_ALPHA,
        "lora_dropout": 0.0,
        "target_modules": spec["targets"],
        "use_rslora": False,
        "bias": "none",
        "task_type": "CAUSAL_LM",
        "fan_in_fan_out": spec["fan_in_fan_out"],
        "base_model_name_or_path": f"tiny-{arch}",
    }
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(adapter_cfg, f, indent=2)
        f.write("\n")
    save_safetensors(os.path.join(d, "adapter_model.safetensors"), lora, {"format": "pt"})
    expected = {
        "input_ids": ids,
        "cu_seqlens": cu,
        "positions": pos,
        "labels": labels,
        "weights": weights,
        "logits": logits,
        "loss": loss.reshape(1),
        "loss_unweighted": loss_unw.reshape(1),
    }
    expected.update(grad)
    meta = {
        "generator": GENERATOR_VERSION,
        "arch": arch,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "dtype": "float64",
        "segment_lengths": json.dumps(SEG_LENS),
        "num_labelled": str(n_lab),
        "lora_scaling": repr(LORA_SCALE),
        "loss_definition": LOSS_DEFINITION,
    }
    save_safetensors(os.path.join(d, "expected.safetensors"), expected, meta)

    # Round-trip the files we wrote.
    for fname, src in (("model.safetensors", w), ("adapter_model.safetensors", lora),
                       ("expected.safetensors", expected)):
        back, _ = load_safetensors(os.path.join(d, fname))
        assert set(back) == set(src), fname
        for k, v in src.items():
            assert torch.equal(back[k], v.detach()), f"{fname}:{k} round trip"

    sizes = {f: os.path.getsize(os.path.join(d, f)) for f in sorted(os.listdir(d))}
    print(f"{arch}: finite differences agree with autograd on {len(probes)} entries (worst |diff| {fd_worst:.1e})")
    print(f"{arch}: T={T} labelled={n_lab} loss={loss.item():.12f} "
          f"loss_unweighted={loss_unw.item():.12f} files={sizes}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.normpath(os.path.join(here, "..", "..", "nn", "model", "testdata", "golden"))
    ap.add_argument("--out", default=default_out)
    ap.add_argument("--arch", action="append", choices=sorted(ARCHS))
    args = ap.parse_args()
    torch.set_num_threads(1)  # fixed reduction order
    torch.set_default_dtype(DT)
    check_builtin_equivalents()
    for arch in args.arch or sorted(ARCHS):
        generate(arch, args.out)
    print(f"golden fixtures written to {args.out} (torch {torch.__version__})")


if __name__ == "__main__":
    sys.exit(main())
