"""Attention-aware growth rules (pwmpr.attention): q/k edges get scores, and each rule's scores equal what it
claims to measure, checked on a tiny attention block by brute-force path sums or finite differences."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from toy import mlp_3432

from pwmpr import MaskSet, prunable
from pwmpr.attention import attention_pwmp_scores, head_importance, qk_groups, qk_scores
from pwmpr.gradient_score import gradient_scores
from pwmpr.growth import GROWTH_RULES, grow
from pwmpr.models import create_model
from pwmpr.models.vit import Attention, ViT
from pwmpr.score import pwmp_scores

ATTENTION_RULES = ["pwmp-attn", "pwmp-qk-gradient", "pwmp-qk-head", "pwmp-qk-random"]
QK = (".q.weight", ".k.weight")


def _random_masks(model: nn.Module, density: float, seed: int = 0) -> MaskSet:
    g = torch.Generator().manual_seed(seed)
    return MaskSet({n: torch.rand(model.get_parameter(n).shape, generator=g) < density for n in prunable(model)})


def _state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


class _TinyNet(nn.Module):
    """One attention block over 3 tokens of dim 4 (2 heads), mean-pooled into a 3-class head."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = Attention(4, 2)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.attn(x).mean(dim=1))


def _tiny(seed: int = 0) -> tuple[_TinyNet, MaskSet, torch.Tensor, torch.Tensor]:
    """The tiny net in float64 with signed weights and biases, masks at density 0.6 applied, and a batch."""
    torch.manual_seed(seed)
    net = _TinyNet().double()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.7)
    masks = _random_masks(net, 0.6, seed)
    masks.apply(net)
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    y = torch.tensor([0, 2])
    return net, masks, x, y


# -- every rule scores q and k ----------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ATTENTION_RULES)
def test_attention_rule_gives_qk_edges_nonzero_scores_and_leaves_the_model_alone(rule):
    torch.manual_seed(0)
    vit = ViT((1, 8, 8), 3, dim=8, depth=2, heads=2, mlp_ratio=2, patch=2)
    masks = _random_masks(vit, 0.3)
    masks.apply(vit)
    batch = (torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2]))
    vit.train()
    before = _state(vit)
    pwmp = pwmp_scores(vit, masks, (1, 8, 8))
    s = GROWTH_RULES.get(rule).scores(vit, masks, (1, 8, 8), lambda: batch)
    assert {k: torch.equal(v, vit.state_dict()[k]) for k, v in before.items()} == {k: True for k in before}
    assert vit.training
    qk = [n for n in s if n.endswith(QK)]
    assert len(qk) == 4
    for name, t in s.items():
        assert torch.isfinite(t).all() and (t >= 0).all(), name
        if name.endswith(QK):
            assert (pwmp[name] == 0).all()  # what the rule is for: PWMP alone gives q and k nothing
            assert (t[~masks[name]] > 0).any(), f"{rule}: no absent edge of {name} can be grown"
    # The draw then grows q and k, under both scopes.
    for scope in ("global", "layer"):
        _, added = grow(masks, s, 0.5, rule=rule, generator=torch.Generator().manual_seed(0), scope=scope)
        assert sum(added[n].numel() for n in qk) > 0, scope


@pytest.mark.parametrize("rule", ATTENTION_RULES)
def test_attention_rules_equal_pwmp_on_a_model_without_attention(rule):
    net, masks = mlp_3432()

    def no_batch():
        raise AssertionError("a model without attention needs no batch")

    s = GROWTH_RULES.get(rule).scores(net, masks, (3,), no_batch)
    ref = pwmp_scores(net, masks, (3,))
    assert s.keys() == ref.keys() and all(torch.equal(s[n], ref[n]) for n in ref)


# -- pwmp-attn: brute-force paths through the softmax's Jacobian --------------------------------------------------
def test_pwmp_attn_equals_brute_force_paths_through_the_softmax_jacobian():
    """On one attention block (3 tokens, dim 4, 2 heads), every score is the sum over the scoring net's paths of
    the other factors' product, enumerated edge by edge: the all-ones input, |W| * mask, and the batch mean of the
    real attention map (v paths) or of scale * |K| (|Q|), the softmax Jacobian |J| and |V| (q and k paths).
    |J| comes from autograd on torch.softmax, not from the closed form the rule uses."""
    net, masks, x, _ = _tiny()
    block = net.attn
    bmasks = MaskSet({n.removeprefix("attn."): m for n, m in masks.items() if n.startswith("attn.")})
    s = attention_pwmp_scores(block, bmasks, (3, 4), (x, torch.zeros(2)))

    t, d, h, dh, nb = 3, 4, 2, 2, x.shape[0]
    scale = dh**-0.5
    eff = {n: (block.get_parameter(f"{n}.weight").detach() * bmasks[f"{n}.weight"]).abs()
           for n in ("q", "k", "v", "proj")}
    with torch.no_grad():
        real = {n: getattr(block, n)(x) for n in ("q", "k", "v")}  # (b, t, d), masked weights, real biases
    q_r, k_r, v_r = (real[n].abs() for n in ("q", "k", "v"))
    att = torch.zeros(nb, h, t, t, dtype=torch.float64)  # real attention maps
    jac = torch.zeros(nb, h, t, t, t, dtype=torch.float64)  # |J| per (b, head, row i): jac[b, h, i, j', j]
    for b, hh, i in itertools.product(range(nb), range(h), range(t)):
        cols = slice(hh * dh, (hh + 1) * dh)
        row = (real["q"][b, i, cols] @ real["k"][b, :, cols].T) * scale
        att[b, hh, i] = torch.softmax(row, 0)
        jac[b, hh, i] = torch.autograd.functional.jacobian(lambda r: torch.softmax(r, 0), row).abs()
    out_w = eff["proj"].sum(0)  # sum_o |Wp[o, r]|: B of every attention output feature (R sums the outputs)
    x_s = torch.ones(d, dtype=torch.float64)  # the scoring net's input at every token
    q_s, k_s, v_s = eff["q"] @ x_s, eff["k"] @ x_s, eff["v"] @ x_s

    want = {n: torch.zeros_like(eff[n]) for n in eff}
    core = torch.zeros(t, d, dtype=torch.float64)  # scoring net's attention output, for the proj scores
    for b, hh, i, j, jp, rl, sl in itertools.product(range(nb), range(h), range(t), range(t), range(t), range(dh),
                                                     range(dh)):
        r, so = hh * dh + rl, hh * dh + sl  # q/k feature r feeds score S_ij; V feature so leaves through A_ij'
        through_q = scale * k_r[b, j, r] * jac[b, hh, i, jp, j] * v_r[b, jp, so] / nb  # path x_i -> q_i[r] -> ...
        through_k = scale * q_r[b, i, r] * jac[b, hh, i, jp, j] * v_r[b, jp, so] / nb  # path x_j -> k_j[r] -> ...
        want["q"][r] += through_q * out_w[so] * x_s
        want["k"][r] += through_k * out_w[so] * x_s
        core[i, so] += q_s[r] * through_q + k_s[r] * through_k
    for b, hh, i, j, rl in itertools.product(range(nb), range(h), range(t), range(t), range(dh)):
        r = hh * dh + rl
        want["v"][r] += att[b, hh, i, j] / nb * out_w[r] * x_s  # path x_j -> v_j[r] -> A_ij -> out_i[r]
        core[i, r] += att[b, hh, i, j] / nb * v_s[r]
    want["proj"] = core.sum(0).expand(d, d).clone()  # edge (o, r): F = sum_i core[i, r], B = 1
    for n in eff:
        torch.testing.assert_close(s[f"{n}.weight"], want[n], rtol=1e-9, atol=0.0)
    assert (s["q.weight"] > 0).all() and (s["k.weight"] > 0).all()


def test_pwmp_attn_v_paths_follow_the_real_attention_not_uniform():
    # With q and k absent the tangent's q/k paths still exist (their absent edges score), but v's scores change
    # with the real attention map: uniform-attention PWMP and pwmp-attn differ on v and agree on the MLP-free head.
    net, masks, x, _ = _tiny(1)
    a = attention_pwmp_scores(net, masks, (3, 4), (x, torch.zeros(2)))
    p = pwmp_scores(net, masks, (3, 4))
    assert not torch.allclose(a["attn.proj.weight"], p["attn.proj.weight"])
    assert (p["attn.q.weight"] == 0).all() and (a["attn.q.weight"] > 0).all()


# -- pwmp-qk-gradient, pwmp-qk-head, pwmp-qk-random: finite differences and the calibration ------------------------
def _calibrated(net, masks, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """raw q/k scores x (mean PWMP score of v and proj) / (mean raw score over q and k): the rules' normalisation."""
    pw = pwmp_scores(net, masks, (3, 4))
    target = torch.cat([pw["attn.v.weight"].reshape(-1), pw["attn.proj.weight"].reshape(-1)]).mean()
    mean = torch.cat([raw[n].reshape(-1) for n in raw]).mean()
    return {n: r * target / mean for n, r in raw.items()}


def _loss(net, x, y, weights: dict[str, torch.Tensor] | None = None) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(torch.func.functional_call(net, weights or {}, (x,)), y))


def test_qk_gradient_scores_are_finite_difference_gradients_calibrated_to_v_and_proj():
    net, masks, x, y = _tiny()
    s = GROWTH_RULES.get("pwmp-qk-gradient").scores(net, masks, (3, 4), lambda: (x, y))
    eps, raw = 1e-6, {}
    for name in ("attn.q.weight", "attn.k.weight"):
        w = net.get_parameter(name).detach()
        fd = torch.zeros_like(w)
        for idx in itertools.product(*map(range, w.shape)):  # absent entries too: their weight 0 moves to +-eps
            up, down = w.clone(), w.clone()
            up[idx] += eps
            down[idx] -= eps
            fd[idx] = (_loss(net, x, y, {name: up}) - _loss(net, x, y, {name: down})) / (2 * eps)
        raw[name] = fd.abs()
    for name, want in _calibrated(net, masks, raw).items():
        torch.testing.assert_close(s[name], want, rtol=1e-6, atol=1e-12)
    pw = pwmp_scores(net, masks, (3, 4))
    for name in ("attn.v.weight", "attn.proj.weight", "head.weight"):
        assert torch.equal(s[name], pw[name])  # the rest of the network is scored by PWMP as before


def test_qk_gradient_scores_the_network_at_its_masks_not_the_weights_it_still_holds():
    # A hybrid or shrink step scores the network after the drop: the dropped v and proj edges still hold their
    # weights in the model but must not act in the forward that gives q and k their gradients.
    net, masks, x, y = _tiny()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.7)  # every weight non-zero again, absent ones included
    pruned = MaskSet({n: m.clone() for n, m in masks.items()})
    pruned["attn.v.weight"][:2] = False
    pruned["attn.proj.weight"][:, 1] = False
    s = GROWTH_RULES.get("pwmp-qk-gradient").scores(net, pruned, (3, 4), lambda: (x, y))
    qk = ("attn.q.weight", "attn.k.weight")
    full = gradient_scores(net, pruned, (x, y))
    for name, want in _calibrated(net, pruned, {n: full[n] for n in qk}).items():
        torch.testing.assert_close(s[name], want, rtol=1e-9, atol=0.0)
    wrong = gradient_scores(net, MaskSet({n: pruned[n] for n in qk}), (x, y))  # v and proj dense: not this
    assert not torch.allclose(full["attn.q.weight"], wrong["attn.q.weight"])


def test_qk_head_scores_are_finite_difference_head_importance_spread_over_the_heads_rows():
    net, masks, x, y = _tiny()
    s = GROWTH_RULES.get("pwmp-qk-head").scores(net, masks, (3, 4), lambda: (x, y))
    eps, h = 1e-6, 2
    importance = torch.zeros(h, dtype=torch.float64)
    for b, hh in itertools.product(range(x.shape[0]), range(h)):
        losses = []
        for sign in (1, -1):
            gate = torch.ones(4, dtype=torch.float64)
            gate[hh * 2 : (hh + 1) * 2] += sign * eps  # head hh's features of the attention output

            handle = net.attn.proj.register_forward_pre_hook(lambda _m, args, gate=gate: (args[0] * gate,))
            try:
                losses.append(_loss(net, x[b : b + 1], y[b : b + 1]))  # L(x_b): one sample, its own gate
            finally:
                handle.remove()
        importance[hh] += abs(losses[0] - losses[1]) / (2 * eps) / x.shape[0]  # Michel et al.: E_x |dL/dxi_h|
    torch.testing.assert_close(head_importance(net, masks, (3, 4), (x, y))[0], importance, rtol=1e-6, atol=0.0)
    raw = {n: importance.repeat_interleave(2)[:, None].expand(4, 4).clone() for n in ("attn.q.weight", "attn.k.weight")}
    for name, want in _calibrated(net, masks, raw).items():
        torch.testing.assert_close(s[name], want, rtol=1e-6, atol=0.0)


def test_qk_random_scores_are_the_mean_pwmp_score_of_v_and_proj():
    net, masks, x, y = _tiny()
    s = qk_scores(net, masks, (3, 4), None, "random")
    pw = pwmp_scores(net, masks, (3, 4))
    target = torch.cat([pw["attn.v.weight"].reshape(-1), pw["attn.proj.weight"].reshape(-1)]).mean()
    assert target > 0
    for name in ("attn.q.weight", "attn.k.weight"):
        torch.testing.assert_close(s[name], torch.full((4, 4), float(target), dtype=torch.float64))
    [group] = qk_groups(net, masks, (3, 4))
    assert list(group.qk) == ["attn.q.weight", "attn.k.weight"] and list(group.others) == ["attn.v.weight",
                                                                                          "attn.proj.weight"]
    assert all(m.all() for m in (*group.qk.values(), *group.others.values()))


def test_data_rules_say_when_they_have_no_batch():
    net, masks, _, _ = _tiny()
    for rule in ("pwmp-attn", "pwmp-qk-gradient", "pwmp-qk-head"):
        with pytest.raises(Exception, match="batch"):
            GROWTH_RULES.get(rule).scores(net, masks, (3, 4), None)


# -- the small ViT ------------------------------------------------------------------------------------------------
def test_vit_mini_shape_and_patches():
    m = create_model("vit-mini", 10, (1, 28, 28))
    assert m.patch_embed.kernel_size == (4, 4) and m.pos_embed.shape == (1, 50, 64)
    assert len(m.blocks) == 4 and m.blocks[0].attn.heads == 4
    assert create_model("vit-mini", 10, (1, 8, 8)).pos_embed.shape == (1, 17, 64)  # digits: patch 2, 16 tokens


# pwmp-attn and pwmp-qk-head go through the runner in the DDP test below.
@pytest.mark.parametrize(("rule", "scope"), [("pwmp-qk-gradient", "global"), ("pwmp-qk-random", "layer")])
def test_attention_rules_grow_vit_mini_through_the_runner(tmp_path, rule, scope):
    from typer.testing import CliRunner

    from pwmpr.cli.app import app

    out = tmp_path / rule
    result = CliRunner().invoke(app, ["grow", "--data", "digits", "--model", "vit-mini", "--batch-size", "64",
                                      "--phase-epochs", "1", "--final-epochs", "0", "--max-phases", "2",
                                      "--no-tau-core", "-q", "--growth", rule, "--scope", scope, "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    phases = [r for r in rows if r["stage"] == "phase"]
    assert phases[0]["n_added"] > 0
    qk = [n for n in phases[0]["layer_density"] if n.endswith(QK)]
    assert any(phases[1]["layer_density"][n] > phases[0]["layer_density"][n] for n in qk)
    if scope == "layer":  # the grown ViT exports (ONNX validated in onnxruntime) like every model
        exported = CliRunner().invoke(app, ["export", str(out), "--out", str(tmp_path / "export")])
        assert exported.exit_code == 0, exported.output
        assert (tmp_path / "export" / "model.onnx").is_file()


@pytest.mark.parametrize(("rule", "scope"), [("pwmp-attn", "global"), ("pwmp-qk-head", "layer")])
def test_attention_rules_under_ddp_decide_on_rank_0(tmp_path, rule, scope):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29527", "-m",
           "pwmpr", "grow", "--data", "digits",
           "--model", "vit-mini", "--phase-epochs", "1", "--final-epochs", "1", "--max-phases", "2", "--no-tau-core",
           "--growth", rule, "--scope", scope, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Each rank raises "masks differ across ranks" before the summary if the ranks' masks diverged.
    assert proc.stdout.count("discovered density") == 1
    phases = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    phases = [r for r in phases if r["stage"] == "phase"]
    qk = [n for n in phases[0]["layer_density"] if n.endswith(QK)]
    assert any(phases[1]["layer_density"][n] > phases[0]["layer_density"][n] for n in qk)


# -- packed projections: nn.MultiheadAttention's in_proj_weight --------------------------------------------------
class _Packed(nn.Module):
    """nn.MultiheadAttention (q, k and v rows packed in one weight) over 3 tokens, mean-pooled into 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.attn(x, x, x)[0].mean(dim=1))


def test_rules_find_q_and_k_rows_inside_a_packed_projection():
    torch.manual_seed(0)
    net = _Packed()
    masks = _random_masks(net, 0.5)
    [group] = qk_groups(net, masks, (3, 4))
    packed = "attn.in_proj_weight"
    rows = group.qk[packed].all(1)
    assert rows.tolist() == [True] * 8 + [False] * 4  # q rows 0-3, k rows 4-7; rows 8-11 are v
    assert group.others[packed].all(1).tolist() == [False] * 8 + [True] * 4
    assert group.others["attn.out_proj.weight"].all()
    assert group.heads[packed][:8, 0].tolist() == [0, 0, 1, 1, 0, 0, 1, 1]  # head_dim 2
    batch = (torch.randn(4, 3, 4), torch.tensor([0, 1, 2, 0]))
    pwmp = pwmp_scores(net, masks, (3, 4))
    assert not pwmp[packed][:8].any()  # uniform attention: q and k rows are blind
    for rule in ATTENTION_RULES:
        s = GROWTH_RULES.get(rule).scores(net, masks, (3, 4), lambda: batch)
        assert (s[packed][:8][~masks[packed][:8]] > 0).any(), rule
        if rule != "pwmp-attn":  # the q/k rules keep PWMP's scores on the value rows
            assert torch.equal(s[packed][8:], pwmp[packed][8:]), rule


class _QKNormed(nn.Module):
    """Packed qkv, 2 heads of width 4, q and k each normalized per head by hand (a norm and an RMS)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj, self.head = nn.Linear(8, 24), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, 2, 4).permute(2, 0, 3, 1, 4)
        q = q / q.norm(dim=-1, keepdim=True)
        k = k * torch.rsqrt(k.pow(2).mean(-1, keepdim=True) + 1e-6)
        return self.head(self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, 8)).mean(1))


class _ClassTokenQKV(nn.Module):
    """A class token computed by another branch (b) joined to the patch tokens; one qkv for all of them."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.qkv, self.head = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 24), nn.Linear(8, 3)

    def forward(self, x):
        h = self.a(x)
        q, k, v = self.qkv(torch.cat([self.b(h.mean(1))[:, None], h], 1)).chunk(3, -1)
        return self.head(F.scaled_dot_product_attention(q, k, v)[:, 0])


@pytest.mark.parametrize("model", [_QKNormed(), _ClassTokenQKV()], ids=["per-head-norm", "class-token-branch"])
def test_q_and_k_are_found_through_a_per_head_norm_and_a_class_token_from_another_branch(model):
    (group,) = qk_groups(model, MaskSet.dense(model), (5, 8))
    qk = group.qk["qkv.weight"]
    assert qk[:16].all() and not qk[16:].any()  # every q and k row, no v row
    assert qk_scores(model, MaskSet.dense(model), (5, 8), None, "random")["qkv.weight"][:16].gt(0).all()


def test_a_softmax_of_attention_weights_is_refused():
    class Twice(_ClassTokenQKV):
        def forward(self, x):
            h = self.a(x)
            q, k, v = self.qkv(h).chunk(3, -1)
            return self.head((torch.softmax(torch.softmax(q @ k.transpose(1, 2), -1), -1) @ v).mean(1))

    from pwmpr.errors import PwmprError
    from pwmpr.graph import build_unit_graph

    for run in (lambda m: build_unit_graph(m, (5, 8)), lambda m: pwmp_scores(m, {}, (5, 8))):
        with pytest.raises(PwmprError, match="a softmax of attention weights has no stand-in"):
            run(Twice())
