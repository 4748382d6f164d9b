#!/usr/bin/env python3
"""Meta-gradient fixtures for the Go PERK engine (perk/).

An independent PyTorch double-backward reference for PERK's meta-gradient,
computed in float64 on the tiny GPT-2 fixture of tools/golden/gen.py
(nn/model/testdata/golden/gpt2/). The inner loop (AdamW or SGD with learned
per-tensor, per-step learning rates, optional token weighting) is unrolled
with torch.autograd.grad: differentiated steps use create_graph=True (exact
second-order terms), first-order steps use the detached inner gradient. The
meta-gradient d L_out / d(phi_0, eta, omega) is then one backward through the
whole unrolled graph.

For each case it writes <out>/<case>/:
  case.json             the inner-loop configuration
  init.safetensors      phi_0 (PEFT LoRA names), perk.lr.*, perk.weighting.*
  inputs.safetensors    segments.{ids,cu_seqlens,prefix_len}, outer.{ids,prompt_len}
  expected.safetensors  the meta-gradient (checkpoint names), outer_loss, inner_losses

See tools/golden/README.md ("Meta-gradient fixtures") for the contract.
Random numbers come from numpy's legacy RandomState and torch runs on one
thread, so the files are byte-identical from run to run on the same builds.

Usage: /usr/bin/python3 tools/golden/perk_ref.py [--out perk/testdata/metagrad]
       [--base nn/model/testdata/golden/gpt2] [--case NAME ...]
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True  # no __pycache__ next to gen.py
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen  # noqa: E402  (the golden GPT-2 reference: primitives + safetensors I/O)
from gen import DT, attention, gelu_new, layer_norm, load_safetensors, save_safetensors, segment_mask  # noqa: E402

GENERATOR_VERSION = "perk-metagrad/1"
LORA_TARGETS = ["c_attn", "c_proj", "c_fc"]
FD_STEP = 1e-5

# Every case: 3 packed context segments, one outer sequence. Cases sharing a
# seed have identical init/inputs (the adamw_* family differs only in how the
# inner loop is differentiated). The AdamW seed 8386 was picked among seeds
# 8000..8399 as the one whose smallest inner-gradient element |g_t,i| over all
# steps is largest (2.9e-5): AdamW's update g/(|g|+eps) has Jacobian
# eps/(|g|+eps)^2, so a near-zero element makes the unrolled objective sharply
# curved there and dominates the second-order terms.
CASES = [
    dict(name="adamw_full", seed=8386, T=3, unroll_start=0, opt="adamw", wd=0.01,
         r=4, alpha=8, rslora=False, weighting=True, hvp="exact"),
    dict(name="adamw_trunc", seed=8386, T=3, unroll_start=1, opt="adamw", wd=0.01,
         r=4, alpha=8, rslora=False, weighting=True, hvp="exact"),
    dict(name="adamw_first_order", seed=8386, T=3, unroll_start=0, opt="adamw", wd=0.01,
         r=4, alpha=8, rslora=False, weighting=True, hvp="first-order"),
    dict(name="sgd_full", seed=7103, T=3, unroll_start=0, opt="sgd", wd=0.01,
         r=4, alpha=8, rslora=False, weighting=False, hvp="exact"),
    dict(name="sgd_weighting", seed=7104, T=2, unroll_start=0, opt="sgd", wd=0.01,
         r=2, alpha=4, rslora=True, weighting=True, hvp="exact"),
]
BETAS = (0.9, 0.999)
EPS = 1e-8
WEIGHTING_HIDDEN = 8
WEIGHTING_BETA = 3.0
# Learned inner learning rates are drawn uniformly from these ranges.
LR_RANGE = {"adamw": (0.004, 0.02), "sgd": (0.2, 0.8)}
SEG_LEN_RANGE = (6, 12)      # inclusive
PREFIX_RANGE = (2, 3)        # inclusive
OUTER_LEN, OUTER_PROMPT = 10, 6

OPT_DEFINITION = (
    "AdamW (torch.optim.AdamW semantics, step count t+1, fresh state): m=b1*m+(1-b1)*g, v=b2*v+(1-b2)*g^2, "
    "phi <- phi*(1-eta*wd) - eta*mhat/(sqrt(vhat)+eps), mhat=m/(1-b1^(t+1)), vhat=v/(1-b2^(t+1)); "
    "SGD: phi <- phi*(1-eta*wd) - eta*g. eta = perk.lr.<tensor>[t]. Steps t < unroll_start (all steps "
    "when hvp=first-order) use a detached g_t; the others are differentiated (create_graph)."
)
LOSS_DEFINITION = (
    "L_in = sum over targets k of w_k*CE_k / #targets; targets: token k>=prefix_len of each segment, "
    "predicted from position k-1; w_k = softplus_beta(fc2(gelu_erf(fc1(h_k)))), h_k = ln_f hidden state of the "
    "base model (no LoRA) at the target's own packed position (w=1 without weighting). "
    "L_out = mean CE of outer.ids[k], k>=prompt_len, predicted from k-1, with LoRA phi_T."
)


# ---------------------------------------------------------------------------
# model pieces
# ---------------------------------------------------------------------------

def lora_prefixes(cfg):
    """PEFT prefixes (without .lora_X.weight) -> (in, out), GPT-2 targets c_attn, c_proj, c_fc."""
    d = cfg["n_embd"]
    out = {}
    for i in range(cfg["n_layer"]):
        p = f"base_model.model.transformer.h.{i}."
        out[p + "attn.c_attn"] = (d, 3 * d)
        out[p + "attn.c_proj"] = (d, d)
        out[p + "mlp.c_fc"] = (d, 4 * d)
        out[p + "mlp.c_proj"] = (4 * d, d)
    return out


def gpt2_hidden(cfg, w, lora, scale, ids, pos, seg):
    """Final hidden states (after ln_f) of the packed sequence; LoRA as PEFT with scaling `scale`."""
    d, H = cfg["n_embd"], cfg["n_head"]
    hd = d // H
    eps = cfg["layer_norm_epsilon"]
    T = ids.shape[0]
    allowed = segment_mask(seg)

    def conv1d(x, name):
        y = x @ w[name + ".weight"] + w[name + ".bias"]
        a = lora.get("base_model.model." + name + ".lora_A.weight")
        if a is None:
            return y
        b = lora["base_model.model." + name + ".lora_B.weight"]
        return y + scale * ((x @ a.t()) @ b.t())

    h = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][pos]
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        a = layer_norm(h, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        q, k, v = conv1d(a, p + "attn.c_attn").split(d, dim=-1)
        o = attention(q.reshape(T, H, hd), k.reshape(T, H, hd), v.reshape(T, H, hd), allowed)
        h = h + conv1d(o, p + "attn.c_proj")
        m = layer_norm(h, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        h = h + conv1d(gelu_new(conv1d(m, p + "mlp.c_fc")), p + "mlp.c_proj")
    return layer_norm(h, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], eps)


def gelu_erf(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def softplus_beta(x, beta):
    return torch.log1p(torch.exp(beta * x)) / beta


def token_weights(omega, h, beta):
    """w_k = softplus_beta(fc2(gelu_erf(fc1(h_k)))), torch Linear convention y = x W^T + b."""
    z = gelu_erf(h @ omega["perk.weighting.fc1.weight"].t() + omega["perk.weighting.fc1.bias"])
    s = z @ omega["perk.weighting.fc2.weight"].t() + omega["perk.weighting.fc2.bias"]
    return softplus_beta(s[:, 0], beta)


def ce_rows(logits, pred_rows, labels):
    """CE_k = logsumexp(logits[pred]) - logits[pred, label] for each target."""
    lg = logits[pred_rows]
    return torch.logsumexp(lg, dim=-1) - lg.gather(1, labels[:, None])[:, 0]


# ---------------------------------------------------------------------------
# a case: data, unrolled inner loop, meta-gradient
# ---------------------------------------------------------------------------

class Case:
    def __init__(self, spec, cfg, base):
        self.spec = spec
        self.cfg = cfg
        self.w = base
        self.T = spec["T"]
        self.U = spec["unroll_start"]
        r, alpha = spec["r"], spec["alpha"]
        self.scale = alpha / math.sqrt(r) if spec["rslora"] else alpha / r
        self.first_order = spec["hvp"] == "first-order"
        V = cfg["vocab_size"]
        rng = gen.Rng(spec["seed"])

        # inputs: three packed segments + one outer sequence
        lens = [int(x) for x in rng.rs.randint(SEG_LEN_RANGE[0], SEG_LEN_RANGE[1] + 1, size=3)]
        prefix = [int(x) for x in rng.rs.randint(PREFIX_RANGE[0], PREFIX_RANGE[1] + 1, size=3)]
        N = sum(lens)
        self.seg_ids = rng.ints(N, V)
        cu = [0]
        for L in lens:
            cu.append(cu[-1] + L)
        self.cu = torch.tensor(cu, dtype=torch.int64)
        self.prefix = torch.tensor(prefix, dtype=torch.int64)
        self.outer_ids = rng.ints(OUTER_LEN, V)
        self.prompt_len = OUTER_PROMPT

        # phi_0, learned LRs, weighting MLP
        self.prefixes = lora_prefixes(cfg)
        self.lora_names = []
        init = {}
        for p in sorted(self.prefixes):
            fin, fout = self.prefixes[p]
            init[p + ".lora_A.weight"] = rng.normal((r, fin), 1.0 / math.sqrt(fin))
            init[p + ".lora_B.weight"] = rng.normal((fout, r), 0.1)  # non-zero B
            self.lora_names += [p + ".lora_A.weight", p + ".lora_B.weight"]
        lo, hi = LR_RANGE[spec["opt"]]
        self.lr_names = ["perk.lr." + n for n in self.lora_names]
        for n in self.lr_names:
            init[n] = rng.uniform((self.T,), lo, hi)
        self.omega_names = []
        if spec["weighting"]:
            d, H = cfg["n_embd"], WEIGHTING_HIDDEN
            init["perk.weighting.fc1.weight"] = rng.normal((H, d), 1.0 / math.sqrt(d))
            init["perk.weighting.fc1.bias"] = rng.normal((H,), 0.1)
            init["perk.weighting.fc2.weight"] = rng.normal((1, H), 0.5)  # non-zero fc2
            init["perk.weighting.fc2.bias"] = rng.normal((1,), 0.1)
            self.omega_names = sorted(n for n in init if n.startswith("perk.weighting."))
        self.init = init
        self.names = self.lora_names + self.lr_names + self.omega_names

        # packed layout and targets
        seg = torch.empty(N, dtype=torch.int64)
        pos = torch.empty(N, dtype=torch.int64)
        tgt = []
        for i in range(3):
            a, b = cu[i], cu[i + 1]
            seg[a:b] = i
            pos[a:b] = torch.arange(b - a)
            tgt += list(range(a + prefix[i], b))
        self.seg, self.pos = seg, pos
        self.tgt_rows = torch.tensor(tgt, dtype=torch.int64)
        self.pred_rows = self.tgt_rows - 1
        self.tgt_labels = self.seg_ids[self.tgt_rows]
        self.outer_pos = torch.arange(OUTER_LEN)
        self.outer_seg = torch.zeros(OUTER_LEN, dtype=torch.int64)
        self.outer_tgt = torch.arange(self.prompt_len, OUTER_LEN)
        # base-model (no LoRA) hidden states at the targets' own positions: w depends on omega only
        with torch.no_grad():
            hb = gpt2_hidden(cfg, base, {}, self.scale, self.seg_ids, pos, seg)
        self.h_targets = hb[self.tgt_rows]

    # -- losses --
    def weights(self, omega):
        if not self.spec["weighting"]:
            return torch.ones(self.tgt_rows.shape[0], dtype=DT)
        return token_weights(omega, self.h_targets, WEIGHTING_BETA)

    def inner_loss(self, phi, wts):
        h = gpt2_hidden(self.cfg, self.w, phi, self.scale, self.seg_ids, self.pos, self.seg)
        logits = h @ self.w["transformer.wte.weight"].t()
        ce = ce_rows(logits, self.pred_rows, self.tgt_labels)
        return (wts * ce).sum() / ce.shape[0]

    def outer_loss(self, phi):
        h = gpt2_hidden(self.cfg, self.w, phi, self.scale, self.outer_ids, self.outer_pos, self.outer_seg)
        logits = h @ self.w["transformer.wte.weight"].t()
        ce = ce_rows(logits, self.outer_tgt - 1, self.outer_ids[self.outer_tgt])
        return ce.mean()

    # -- the unrolled inner loop --
    def unroll(self, params, graph, exact_all=False, const_grads=None):
        """Run T inner steps from params (name -> tensor) and return
        (outer_loss, inner_losses, grads g_t, min vhat, phi_T).

        graph=True: params must require grad; the outer loss then carries the
        graph of the whole unrolled loop (differentiated steps built with
        create_graph=True, first-order steps with detached g_t).
        exact_all: differentiate every step (ignore unroll_start and hvp).
        const_grads: list of per-step grad dicts; where given (not None) they
        replace g_t (the surrogate objective whose gradient is the truncated
        meta-gradient)."""
        sp = self.spec
        names = self.lora_names
        omega = {n: params[n] for n in self.omega_names}
        wts = self.weights(omega)
        phi = {n: params[n] for n in names}
        m = {n: torch.zeros_like(params[n]) for n in names}
        v = {n: torch.zeros_like(params[n]) for n in names}
        b1, b2 = BETAS
        inner_losses, grads = [], []
        min_vhat = math.inf
        for t in range(self.T):
            diff = graph and (exact_all or (not self.first_order and t >= self.U))
            if not graph:
                phi = {n: p.detach().requires_grad_(True) for n, p in phi.items()}
            loss = self.inner_loss(phi, wts)
            inner_losses.append(loss.detach())
            g = torch.autograd.grad(loss, [phi[n] for n in names], create_graph=diff, retain_graph=graph)
            g = dict(zip(names, g if diff else [x.detach() for x in g]))
            grads.append({n: x.detach() for n, x in g.items()})
            if const_grads is not None and const_grads[t] is not None:
                g = const_grads[t]
            new = {}
            for n in names:
                eta = params["perk.lr." + n][t]
                p = phi[n] if graph else phi[n].detach()
                gn = g[n]
                if sp["opt"] == "adamw":
                    m[n] = b1 * m[n] + (1 - b1) * gn
                    v[n] = b2 * v[n] + (1 - b2) * gn * gn
                    mhat = m[n] / (1 - b1 ** (t + 1))
                    vhat = v[n] / (1 - b2 ** (t + 1))
                    ok = vhat > 0  # elements with vhat == 0 take only the decay
                    upd = torch.where(ok, mhat / (torch.sqrt(torch.where(ok, vhat, torch.ones_like(vhat))) + EPS),
                                      torch.zeros_like(vhat))
                    min_vhat = min(min_vhat, float(vhat.detach().min()))
                    new[n] = p * (1 - eta * sp["wd"]) - eta * upd
                else:
                    new[n] = p * (1 - eta * sp["wd"]) - eta * gn
            phi = new
        out = self.outer_loss(phi if graph else {n: p.detach() for n, p in phi.items()})
        return out, inner_losses, grads, min_vhat, phi

    def meta_grad(self, exact_all=False, const_grads=None):
        params = {n: self.init[n].clone().requires_grad_(True) for n in self.names}
        out, inner, grads, min_vhat, phiT = self.unroll(params, True, exact_all, const_grads)
        gs = torch.autograd.grad(out, [params[n] for n in self.names], allow_unused=True)
        mg = {n: (torch.zeros_like(params[n]) if x is None else x.detach()) for n, x in zip(self.names, gs)}
        return mg, out.detach(), torch.stack(inner), grads, min_vhat, {n: p.detach() for n, p in phiT.items()}

    def objective(self, params, const_grads=None):
        with torch.enable_grad():
            out, _, _, _, _ = self.unroll(params, False, const_grads=const_grads)
        return float(out)


# ---------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------

def check_builtin_equivalents():
    F = torch.nn.functional
    x = torch.linspace(-6, 6, 97, dtype=DT)
    assert torch.allclose(gelu_erf(x), F.gelu(x), rtol=0, atol=1e-15)
    assert torch.allclose(softplus_beta(x, 3.0), F.softplus(x, beta=3.0, threshold=1e9), rtol=0, atol=1e-15)
    lg = torch.randn(7, 11, dtype=DT, generator=torch.Generator().manual_seed(1))
    lab = torch.tensor([3, 1, 0, 10, 5, 9, 2])
    ref = F.cross_entropy(lg, lab, reduction="none")
    assert torch.allclose(ce_rows(lg, torch.arange(7), lab), ref, rtol=0, atol=1e-14)


def check_forward_vs_gen(case):
    """Our forward equals gen.py's golden GPT-2 forward (gen uses scaling alpha/r = 2)."""
    phi = {n: case.init[n] for n in case.lora_names}
    h = gpt2_hidden(case.cfg, case.w, phi, gen.LORA_SCALE, case.seg_ids, case.pos, case.seg)
    ours = h @ case.w["transformer.wte.weight"].t()
    ref = gen.gpt2_forward(case.cfg, case.w, phi, case.seg_ids, case.pos, case.seg)
    assert torch.allclose(ours, ref, rtol=0, atol=1e-12), "forward differs from gen.gpt2_forward"


def check_packing(case):
    """L_in of the packed batch == per-segment sums (each segment run alone) / #targets."""
    phi = {n: case.init[n] for n in case.lora_names}
    omega = {n: case.init[n] for n in case.omega_names}
    wts = case.weights(omega)
    packed = case.inner_loss(phi, wts)
    total, j = torch.zeros((), dtype=DT), 0
    for i in range(3):
        a, b = int(case.cu[i]), int(case.cu[i + 1])
        L, pl = b - a, int(case.prefix[i])
        ids = case.seg_ids[a:b]
        pos, seg = torch.arange(L), torch.zeros(L, dtype=torch.int64)
        hb = gpt2_hidden(case.cfg, case.w, {}, case.scale, ids, pos, seg)
        if case.spec["weighting"]:
            wi = token_weights(omega, hb[pl:], WEIGHTING_BETA)
        else:
            wi = torch.ones(L - pl, dtype=DT)
        h = gpt2_hidden(case.cfg, case.w, phi, case.scale, ids, pos, seg)
        lg = h @ case.w["transformer.wte.weight"].t()
        total = total + (wi * ce_rows(lg, torch.arange(pl - 1, L - 1), ids[pl:])).sum()
        j += L - pl
    assert j == case.tgt_rows.shape[0]
    err = abs(float(total) / j - float(packed))
    assert err < 1e-13, f"packed inner loss != per-segment ({err})"
    w_spread = (float(wts.min()), float(wts.max()))
    if case.spec["weighting"]:
        assert w_spread[1] - w_spread[0] > 0.1, f"token weights nearly constant {w_spread}"
        s = (case.h_targets @ omega["perk.weighting.fc1.weight"].t() + omega["perk.weighting.fc1.bias"])
        s = gelu_erf(s) @ omega["perk.weighting.fc2.weight"].t() + omega["perk.weighting.fc2.bias"]
        assert float((WEIGHTING_BETA * s).abs().max()) < 20, "softplus threshold region reached"
    return w_spread


def check_torch_optim(case, phiT_ref):
    """The first-order forward trajectory equals torch.optim.AdamW / SGD with one group per tensor."""
    sp = case.spec
    ps = {n: case.init[n].clone().requires_grad_(True) for n in case.lora_names}
    groups = [{"params": [ps[n]], "lr": 0.0, "name": n} for n in case.lora_names]
    if sp["opt"] == "adamw":
        opt = torch.optim.AdamW(groups, lr=0.0, betas=BETAS, eps=EPS, weight_decay=sp["wd"])
    else:
        opt = torch.optim.SGD(groups, lr=0.0, weight_decay=sp["wd"])
    wts = case.weights({n: case.init[n] for n in case.omega_names})
    for t in range(case.T):
        for gr in opt.param_groups:
            gr["lr"] = float(case.init["perk.lr." + gr["name"]][t])
        opt.zero_grad()
        case.inner_loss(ps, wts).backward()
        opt.step()
    err = max(float((ps[n].detach() - phiT_ref[n]).abs().max()) for n in case.lora_names)
    assert err < 1e-13, f"trajectory differs from torch.optim ({err})"
    return err


def flat_dirs(case, rs):
    """Random unit directions: per group (phi_0, eta, omega) and one over all of them."""
    groups = {"phi0": case.lora_names, "lr": case.lr_names}
    if case.omega_names:
        groups["omega"] = case.omega_names
    dirs = []
    for gname, names in groups.items():
        u = {n: torch.zeros_like(case.init[n]) for n in case.names}
        for n in names:
            u[n] = torch.from_numpy(rs.standard_normal(size=tuple(case.init[n].shape)))
        nrm = math.sqrt(sum(float((u[n] ** 2).sum()) for n in names))
        dirs.append((gname, {n: x / nrm for n, x in u.items()}))
    u = {n: torch.from_numpy(rs.standard_normal(size=tuple(case.init[n].shape))) for n in case.names}
    nrm = math.sqrt(sum(float((x ** 2).sum()) for x in u.values()))
    dirs.append(("all", {n: x / nrm for n, x in u.items()}))
    return dirs


def fd_check(case, mg, const_grads=None, tol=1e-7):
    """Finite differences of the whole unrolled objective F along random unit directions u
    vs <meta-gradient, u>. fd2 is the plain central difference with step h = FD_STEP;
    fd4 the 5-point central stencil (Richardson of steps h and 2h),
    (8(F(x+hu) - F(x-hu)) - (F(x+2hu) - F(x-2hu))) / 12h, whose truncation error is O(h^4)
    instead of O(h^2). The assertion is on fd4. Returns [(group, <g,u>, fd2, err2, fd4, err4)]."""
    rs = np.random.RandomState(case.spec["seed"] + 99)
    h = FD_STEP
    res = []
    for gname, u in flat_dirs(case, rs):
        dd = sum(float((mg[n] * u[n]).sum()) for n in case.names)
        f = {}
        for k in (-2, -1, 1, 2):
            f[k] = case.objective({n: case.init[n] + (k * h) * u[n] for n in case.names}, const_grads)
        fd2 = (f[1] - f[-1]) / (2 * h)
        fd4 = (8 * (f[1] - f[-1]) - (f[2] - f[-2])) / (12 * h)
        gnorm = math.sqrt(sum(float((mg[n] ** 2).sum()) for n in case.names if u[n].abs().max() > 0))
        if gnorm == 0:
            # a group with an identically zero meta-gradient (omega under hvp=first-order):
            # the objective must not depend on it at all.
            assert f[1] == f[-1] and f[2] == f[-2], f"{case.spec['name']}: F depends on {gname}"
            res.append((gname, dd, fd2, 0.0, fd4, 0.0))
            continue
        den = max(abs(dd), 1e-3 * gnorm)
        err2, err4 = abs(fd2 - dd) / den, abs(fd4 - dd) / den
        res.append((gname, dd, fd2, err2, fd4, err4))
        assert err4 < tol, f"{case.spec['name']}: FD check ({gname}) dd={dd!r} fd4={fd4!r} rel={err4:.2e}"
    return res


def group_rel_diff(case, a, b):
    """Relative 2-norm difference per group between two meta-gradients."""
    out = {}
    for gname, names in (("phi0", case.lora_names), ("lr", case.lr_names), ("omega", case.omega_names)):
        if not names:
            continue
        num = math.sqrt(sum(float(((a[n] - b[n]) ** 2).sum()) for n in names))
        den = math.sqrt(sum(float((b[n] ** 2).sum()) for n in names))
        out[gname] = num / den
    return out


# ---------------------------------------------------------------------------
# generation
# ---------------------------------------------------------------------------

def case_json(sp):
    return {
        "inner_steps": sp["T"],
        "unroll_start": sp["unroll_start"],
        "inner_opt": sp["opt"],
        "inner_betas": list(BETAS),
        "inner_eps": EPS,
        "inner_weight_decay": sp["wd"],
        "lora_rank": sp["r"],
        "lora_alpha": sp["alpha"],
        "rslora": sp["rslora"],
        "lora_targets": LORA_TARGETS,
        "weighting": sp["weighting"],
        "weighting_hidden": WEIGHTING_HIDDEN,
        "weighting_beta": WEIGHTING_BETA,
        "hvp": sp["hvp"],
    }


def generate(spec, cfg, base, out_root):
    case = Case(spec, cfg, base)
    name = spec["name"]
    check_forward_vs_gen(case)
    w_spread = check_packing(case)

    mg, outer, inner, grads, min_vhat, phiT = case.meta_grad()
    # forward trajectory (no meta graph) equals torch.optim's
    with torch.enable_grad():
        _, inner2, _, _, phiT2 = case.unroll({n: case.init[n] for n in case.names}, False)
    assert torch.equal(torch.stack(inner2), inner), "graph/no-graph inner losses differ"
    for n in case.lora_names:
        assert torch.equal(phiT2[n], phiT[n]), "graph/no-graph phi_T differ"
    opt_err = check_torch_optim(case, phiT)

    # sanity: finite, informative
    for n in case.names:
        assert torch.isfinite(mg[n]).all(), f"{name}: non-finite meta-gradient {n}"
    gmin = min(float(g[n].abs().min()) for g in grads for n in case.lora_names)
    gmax = max(float(g[n].abs().max()) for g in grads for n in case.lora_names)
    for n in case.lora_names + case.lr_names:
        assert float(mg[n].abs().max()) > 0, f"{name}: zero meta-gradient for {n}"
    if spec["weighting"] and not case.first_order:
        for n in case.omega_names:
            assert float(mg[n].abs().max()) > 0, f"{name}: zero meta-gradient for {n}"
    if spec["opt"] == "adamw":
        # every element keeps sqrt(vhat) >= 1000*eps: no element sits in Adam's eps region
        assert min_vhat > 1e6 * EPS ** 2, f"{name}: vhat {min_vhat} too close to eps^2"
    step_rel = []
    for n in case.lora_names:
        step_rel.append(float((phiT[n] - case.init[n]).norm() / case.init[n].norm()))

    exact = spec["hvp"] == "exact" and spec["unroll_start"] == 0
    report = {"fd": [], "vs_full": None}
    if exact:
        report["fd"] = fd_check(case, mg)
    else:
        # The truncated/first-order meta-gradient is the exact gradient of the surrogate
        # objective with g_t (first-order steps) frozen at the nominal trajectory's values.
        frozen = [grads[t] if (case.first_order or t < case.U) else None for t in range(case.T)]
        report["fd"] = fd_check(case, mg, const_grads=frozen)
        full, full_outer, full_inner, _, _, _ = case.meta_grad(exact_all=True)
        assert torch.equal(full_outer, outer) and torch.equal(full_inner, inner)
        report["vs_full"] = group_rel_diff(case, mg, full)
        assert report["vs_full"]["phi0"] > 1e-6, f"{name}: truncated meta-gradient equals the full one"
        if case.first_order and case.omega_names:
            assert report["vs_full"]["omega"] == 1.0  # all-zero vs the full omega gradient
        if not case.first_order and case.U == 1:
            # eta_0's gradient is adj(phi_1).(-wd*phi_0 - u_0) and adj(phi_1) comes from the
            # differentiated steps 1.., so every eta gradient equals the full one.
            for n in case.lr_names:
                assert torch.allclose(mg[n], full[n], rtol=1e-12, atol=0), f"{name}: {n}"

    # ---- write ----
    d = os.path.join(out_root, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(case_json(spec), f, indent=2)
        f.write("\n")
    init = dict(case.init)
    save_safetensors(os.path.join(d, "init.safetensors"), init, {"format": "pt", "generator": GENERATOR_VERSION})
    inputs = {
        "segments.ids": case.seg_ids,
        "segments.cu_seqlens": case.cu,
        "segments.prefix_len": case.prefix,
        "outer.ids": case.outer_ids,
        "outer.prompt_len": torch.tensor([case.prompt_len], dtype=torch.int64),
    }
    save_safetensors(os.path.join(d, "inputs.safetensors"), inputs, {"generator": GENERATOR_VERSION})
    expected = dict(mg)
    expected["outer_loss"] = outer.reshape(1)
    expected["inner_losses"] = inner
    meta = {
        "generator": GENERATOR_VERSION,
        "case": name,
        "base_model": "nn/model/testdata/golden/gpt2",
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "dtype": "float64",
        "lora_scaling": repr(case.scale),
        "num_inner_targets": str(int(case.tgt_rows.shape[0])),
        "optimizer_definition": OPT_DEFINITION,
        "loss_definition": LOSS_DEFINITION,
    }
    save_safetensors(os.path.join(d, "expected.safetensors"), expected, meta)
    for fname, src in (("init.safetensors", init), ("inputs.safetensors", inputs),
                       ("expected.safetensors", expected)):
        back, _ = load_safetensors(os.path.join(d, fname))
        assert set(back) == set(src), fname
        for k, v in src.items():
            assert torch.equal(back[k], v.detach()), f"{fname}:{k} round trip"

    print(f"{name}: T={case.T} U={case.U} opt={spec['opt']} hvp={spec['hvp']} r={spec['r']} "
          f"scale={case.scale:.6g} weighting={spec['weighting']} segments={case.cu.tolist()} "
          f"prefix={case.prefix.tolist()} targets={int(case.tgt_rows.shape[0])}")
    print(f"  outer_loss={float(outer):.12f} inner_losses={[round(float(x), 9) for x in inner]}")
    print(f"  |g| in [{gmin:.2e}, {gmax:.2e}]" + (f", min vhat {min_vhat:.2e}" if spec["opt"] == "adamw" else "")
          + f", |phi_T-phi_0|/|phi_0| in [{min(step_rel):.3f}, {max(step_rel):.3f}], torch.optim trajectory diff {opt_err:.1e}"
          + (f", token weights in [{w_spread[0]:.3f}, {w_spread[1]:.3f}]" if spec["weighting"] else ""))
    kind = "whole objective" if exact else "surrogate objective (frozen first-order g_t)"
    for gname, dd, fd2, err2, fd4, err4 in report["fd"]:
        print(f"  FD {kind} along {gname:5s}: <grad,u>={dd:+.12e} 5-point={fd4:+.12e} rel err {err4:.1e}"
              f" (3-point h={FD_STEP:g}: {err2:.1e})")
    if report["vs_full"] is not None:
        print("  differs from the full second-order meta-gradient: rel diff "
              + ", ".join(f"{k} {v:.2e}" for k, v in report["vs_full"].items()))
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.normpath(os.path.join(here, "..", ".."))
    ap.add_argument("--out", default=os.path.join(root, "perk", "testdata", "metagrad"))
    ap.add_argument("--base", default=os.path.join(root, "nn", "model", "testdata", "golden", "gpt2"))
    ap.add_argument("--case", action="append", choices=[c["name"] for c in CASES])
    args = ap.parse_args()
    torch.set_num_threads(1)  # fixed reduction order
    torch.set_default_dtype(DT)
    check_builtin_equivalents()
    with open(os.path.join(args.base, "config.json")) as f:
        cfg = json.load(f)
    base, _ = load_safetensors(os.path.join(args.base, "model.safetensors"))
    assert all(v.dtype == DT for v in base.values())
    for spec in CASES:
        if args.case and spec["name"] not in args.case:
            continue
        generate(spec, cfg, base, args.out)
    print(f"meta-gradient fixtures written to {args.out} (torch {torch.__version__})")


if __name__ == "__main__":
    sys.exit(main())
