"""Scores for attention's query and key weights, where PWMP is blind (docs/method.md, "Attention: growing q and k").

PWMP's scoring net replaces softmax attention by uniform attention (pwmpr.score), so the query and key weights
carry no path mass and the ``pwmp`` rule never grows them. The functions here give them scores, each behind a
growth rule of ``pwmpr.growth.GROWTH_RULES``:

* :func:`attention_pwmp_scores` (``pwmp-attn``): PWMP through the real attention. The scoring net's attention is
  the tangent of the real one at a real batch, in absolute values, so q and k edges get the path mass they move
  through the softmax's Jacobian; every edge of the model is scored in that one net.
* :func:`qk_scores` (``pwmp-qk-gradient``, ``pwmp-qk-head``, ``pwmp-qk-random``): PWMP everywhere, and the q and
  k weights of each attention module get ``|dL/dw|`` (RigL), the importance of their head (Michel et al. 2019),
  or a constant, rescaled so that their mean equals the mean PWMP score of the module's other weights.

The engine knows no zoo model; an attention module speaks to it through two hooks (docs/architecture.md, "Model
hooks"): ``pwmp_qk`` (a class attribute naming the children that hold the query and key weights, whose output
features are laid out head by head) and ``pwmp_attention(core)`` (a method: compute ``core(q, k, v, scale)``, with
per-head tensors ``(batch, heads, tokens, head_dim)``, in place of ``softmax(q k^T * scale) v``; None restores it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from pwmpr.errors import PwmprError
from pwmpr.masks import MaskSet, prunable
from pwmpr.probe import device_of, normalize_input_shape, sum_outputs
from pwmpr.probe import run_forward
from pwmpr.score import gradient_scores, pwmp_scores
from pwmpr.surrogate import linear_surrogate

#: Class attribute of an attention module: the names of its children holding the query and key weights.
QK_HOOK = "pwmp_qk"
#: Method of an attention module: ``pwmp_attention(core)`` routes its softmax attention through ``core``.
ATTENTION_HOOK = "pwmp_attention"

Core = Callable[[Tensor, Tensor, Tensor, float], Tensor]
Batch = tuple[Tensor, Tensor] | Sequence[Tensor]


@dataclass(frozen=True)
class QKGroup:
    """The masked weights of one attention module: query/key weights and the module's other prunable weights."""

    module: str  # the module's name in the model ("" for the model itself)
    qk: tuple[str, ...]  # masked query and key weight names
    others: tuple[str, ...]  # the module's other masked prunable weights (value, output projection)


def _full(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every module with the attention hook ``pwmp_attention(core)``, in model order."""
    return [(n, m) for n, m in model.named_modules() if callable(getattr(m, ATTENTION_HOOK, None))]


def qk_groups(model: nn.Module, masks: Mapping[str, Tensor]) -> list[QKGroup]:
    """One :class:`QKGroup` per module declaring ``pwmp_qk`` that has a masked query or key weight."""
    groups = []
    for name, module in model.named_modules():
        children = getattr(module, QK_HOOK, None)
        if not children:
            continue
        local = prunable(module)
        qk = tuple(_full(name, p) for p in local if p.split(".", 1)[0] in children and _full(name, p) in masks)
        others = tuple(_full(name, p) for p in local
                       if p.split(".", 1)[0] not in children and _full(name, p) in masks)
        if qk:
            groups.append(QKGroup(name, qk, others))
    return groups


def _checked_batch(batch: Batch | None, device: torch.device) -> tuple[Tensor, Tensor]:
    if batch is None:
        raise PwmprError("this growth rule scores attention on a real batch, but none was given")
    if not isinstance(batch, Sequence) or len(batch) != 2 or not all(isinstance(t, Tensor) for t in batch):
        raise PwmprError(f"batch must be a pair of tensors (x, y), got {type(batch).__name__}")
    return batch[0].to(device), batch[1].to(device)


def _with_cores(model: nn.Module, masks: MaskSet, x: Tensor, cores: Mapping[str, Core], *, train: bool,
                dtype: torch.dtype | None = None) -> Tensor:
    """The model's output on ``x`` with effective weights ``W * mask`` and each named module's attention routed
    through its core; parameters, buffers (cloned: train-mode BN updates them) and modes are left as they were."""
    modules = dict(model.named_modules())
    params = {n: p.detach() for n, p in model.named_parameters()}
    for n in masks:
        params[n] = params[n] * masks[n].to(device=params[n].device, dtype=params[n].dtype)
    tensors = {**{n: b.clone() for n, b in model.named_buffers()}, **params}
    if dtype is not None:
        tensors = {n: t.to(dtype) if t.is_floating_point() else t for n, t in tensors.items()}
        x = x.to(dtype)
    modes = {m: m.training for m in model.modules()}
    model.train(train)
    try:
        for name, core in cores.items():
            getattr(modules[name], ATTENTION_HOOK)(core)
        return functional_call(model, tensors, (x,))
    finally:
        for name in cores:
            getattr(modules[name], ATTENTION_HOOK)(None)
        for m, mode in modes.items():
            m.training = mode


# -- pwmp-attn: PWMP through the tangent of the real attention --------------------------------------------------


@dataclass
class _Observed:
    """What one attention module saw on the real batch, float64, per sample: attention map ``a`` (b, h, t, t),
    |q|, |k|, |v| and ``a @ |v|`` (b, h, t, head_dim)."""

    a: Tensor
    q: Tensor
    k: Tensor
    v: Tensor
    av: Tensor


def _recorder(store: dict[str, _Observed], name: str) -> Core:
    def core(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        a = torch.softmax((q @ k.transpose(-2, -1)) * scale, dim=-1)
        qd, kd, vd, ad = (t.detach().double() for t in (q, k, v, a))
        store[name] = _Observed(ad, qd.abs(), kd.abs(), vd.abs(), ad @ vd.abs())
        return a @ v

    return core


def tangent_core(obs: _Observed) -> Core:
    """The attention core of the scoring net: the tangent of the real attention at the observed batch, in absolute
    values, averaged over the batch's samples (docs/method.md, "Attention: growing q and k", ``pwmp-attn``).

    For scoring-net activations q, k, v (linear in the input, non-negative) it returns, per head and token i,
    ``mean_b [ A_b v + sum_j' |J_bi|(j', :) dS_bi |V_b,j'| ]`` with ``dS_bi,j = scale (q_i . |K_b,j| + |Q_b,i| . k_j)``:
    the v path through the real attention map and the q and k paths through the absolute softmax Jacobian
    ``|J_i| = |diag(a_i) - a_i a_i^T|``, whose product with dS has the closed form
    ``a_ij' (a_i . dS_i) + a_ij' (1 - 2 a_ij') dS_ij'``. It is linear in q, k and v.
    """

    def core(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        if q.shape[1:] != obs.q.shape[1:]:
            raise PwmprError(f"attention of shape {tuple(q.shape[1:])} (heads, tokens, head_dim) in the scoring net, "
                             f"but {tuple(obs.q.shape[1:])} on the real batch")
        a = obs.a
        out = torch.einsum("hij,nhjd->nhid", a.mean(0), v)
        ds = scale * (torch.einsum("nhir,bhjr->nbhij", q, obs.k) + torch.einsum("nhjr,bhir->nbhij", k, obs.q))
        w = ds * a
        jac = w.sum(-1, keepdim=True) * obs.av + torch.einsum("nbhij,bhjd->nbhid", w * (1 - 2 * a), obs.v)
        return out + jac.mean(1)

    return core


@torch.enable_grad()
def attention_pwmp_scores(model: nn.Module, masks: Mapping[str, Tensor], input_shape: Sequence[int],
                          batch: Batch | None) -> dict[str, Tensor]:
    """PWMP scores with every attention module's softmax replaced by its tangent at a real batch (``pwmp-attn``).

    The model runs once on ``batch``'s inputs (eval mode, float64, effective weights ``W * mask``) and each module
    with the ``pwmp_attention`` hook records its attention maps, |q|, |k| and |v|. The scoring net is then PWMP's
    (:func:`pwmpr.surrogate.linear_surrogate`: |W| * mask, zero shifts, norms as positive scales, identity
    activations, all-ones input) with each attention replaced by :func:`tangent_core`, and the score of an edge is
    ``dR/dW_eff``, R the sum of the outputs. Every score is a path sum in that one linear net, so scores of
    different layers compare as PWMP's do. A model without attention modules gets exactly
    :func:`pwmpr.score.pwmp_scores`.

    Args:
        model: the network; its parameters, buffers and modes are left unchanged.
        masks: ``{weight name: bool mask}``; a score is returned for each of these names.
        input_shape: one input without the batch dimension.
        batch: ``(x, y)`` (y unused): the real batch the attention is linearized around.

    Returns:
        ``{weight name: float64 tensor of the weight's shape}`` on the model's device, all entries >= 0.

    Raises:
        PwmprError: bad masks, input shape or batch.
    """
    modules = attention_modules(model)
    if not modules:
        return pwmp_scores(model, masks, input_shape)
    masks = MaskSet.checked(model, masks)
    device = device_of(model)
    x, _ = _checked_batch(batch, device)
    seen: dict[str, _Observed] = {}
    with torch.no_grad():
        _with_cores(model, masks, x, {n: _recorder(seen, n) for n, _ in modules}, train=False, dtype=torch.float64)

    surrogate = linear_surrogate(model, masks)
    for name, obs in seen.items():
        getattr(surrogate.get_submodule(name), ATTENTION_HOOK)(tangent_core(obs))
    shape = normalize_input_shape(input_shape)
    params = dict(surrogate.named_parameters())
    leaves = [params[n] for n in masks]
    for p in leaves:
        p.requires_grad_(True)
    total = sum_outputs(run_forward(surrogate, torch.ones((1, *shape), dtype=torch.float64, device=device)))
    if not total.requires_grad:
        return {n: torch.zeros_like(p) for n, p in zip(masks, leaves, strict=True)}
    grads = torch.autograd.grad(total, leaves, allow_unused=True)
    return {n: (g.detach() if g is not None else torch.zeros_like(p))
            for n, p, g in zip(masks, leaves, grads, strict=True)}


# -- q/k scores beside PWMP: gradient, head importance, random ---------------------------------------------------


@torch.enable_grad()
def head_importance(model: nn.Module, masks: Mapping[str, Tensor], batch: Batch,
                    loss_fn: Callable[..., Tensor] = F.cross_entropy, *, train: bool = True) -> dict[str, Tensor]:
    """Michel et al. (2019)'s head importance ``I_h = mean_x |dL(x)/dxi_h|`` of every attention module's heads.

    ``xi_h`` is a gate multiplying head h's attention output (1 in the real network); the gradient is taken per
    sample (one gate per sample and head, loss summed over the batch), so the mean is over per-sample magnitudes
    as in the paper. Runs with the effective weights ``W * mask``, in train mode by default (as
    :func:`pwmpr.score.gradient_scores`).

    Returns:
        ``{attention module name: float64 tensor (heads,)}``, all entries >= 0, on the model's device.
    """
    masks = MaskSet.checked(model, masks)
    device = device_of(model)
    x, y = _checked_batch(batch, device)
    gates: dict[str, Tensor] = {}

    def gated(name: str) -> Core:
        def core(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
            gate = torch.ones(q.shape[0], q.shape[1], 1, 1, dtype=q.dtype, device=q.device, requires_grad=True)
            gates[name] = gate
            return (torch.softmax((q @ k.transpose(-2, -1)) * scale, dim=-1) @ v) * gate

        return core

    out = _with_cores(model, masks, x, {n: gated(n) for n, _ in attention_modules(model)}, train=train)
    if not gates:
        return {}
    loss = loss_fn(out, y, reduction="sum")
    grads = torch.autograd.grad(loss, list(gates.values()), allow_unused=True)
    return {n: (torch.zeros(g.shape[1], dtype=torch.float64, device=device) if d is None
                else d.detach().abs().double().mean(dim=0).reshape(-1))
            for (n, g), d in zip(gates.items(), grads, strict=True)}


QK_KINDS = ("gradient", "head", "random")


@torch.enable_grad()
def qk_scores(model: nn.Module, masks: Mapping[str, Tensor], input_shape: Sequence[int], batch: Batch | None,
              kind: str) -> dict[str, Tensor]:
    """PWMP scores, with the query and key weights of every attention module scored by ``kind`` instead.

    ``kind``: ``gradient`` (``|dL/dW_eff|`` on ``batch`` of the network at ``masks``, every layer's absent
    edges at zero whatever the model's weights hold, RigL's growth criterion), ``head`` (the importance of the
    entry's head, :func:`head_importance`, the same for every q/k entry of a head) or ``random`` (a constant: the
    q/k entries are drawn uniformly). Within a module the raw q/k scores are then multiplied by one factor, so that
    their mean over the module's q and k entries (present and absent) equals the mean PWMP score of the module's
    other masked weights (value and output projection; all non-q/k weights if it has none): the module's q and k
    weigh in the global draw like its value and projection, and the rule decides which q/k edges get that weight.
    A model without ``pwmp_qk`` modules gets exactly :func:`pwmpr.score.pwmp_scores`.

    Returns:
        ``{weight name: float64 tensor of the weight's shape}``, all entries >= 0.

    Raises:
        PwmprError: unknown ``kind``, bad masks, input shape or batch, or head importance asked of a module
            without the ``pwmp_attention`` hook.
    """
    if kind not in QK_KINDS:
        raise PwmprError(f"q/k score kind must be one of {', '.join(QK_KINDS)}; got {kind!r}")
    scores = pwmp_scores(model, masks, input_shape)
    groups = qk_groups(model, masks)
    if not groups:
        return scores
    masks = MaskSet.checked(model, masks)
    names = [n for g in groups for n in g.qk]
    if kind == "gradient":
        # The gradient of the masked network (every layer at its mask: in a hybrid or shrink step the edges just
        # dropped no longer act), kept for q and k only.
        grads = gradient_scores(model, masks, _checked_batch(batch, device_of(model)))
        raw = {n: grads[n] for n in names}
    elif kind == "head":
        importance = head_importance(model, masks, _checked_batch(batch, device_of(model)))
        raw = {}
        for g in groups:
            if g.module not in importance:
                raise PwmprError(f"module {g.module or type(model).__name__} declares {QK_HOOK} but has no "
                                 f"{ATTENTION_HOOK}() hook (or did not run): its heads cannot be gated")
            imp = importance[g.module]
            for n in g.qk:
                rows = scores[n].shape[0]
                if rows % imp.numel():
                    raise PwmprError(f"{n} has {rows} output features, not a multiple of its {imp.numel()} heads")
                per_row = imp.repeat_interleave(rows // imp.numel()).to(scores[n].device)
                raw[n] = per_row.view(-1, *([1] * (scores[n].dim() - 1))).expand_as(scores[n]).clone()
    else:
        raw = {n: torch.ones_like(scores[n]) for n in names}
    non_qk = [n for n in scores if n not in set(names)]
    for g in groups:
        ref = g.others or tuple(non_qk)
        target = torch.cat([scores[n].reshape(-1) for n in ref]).mean() if ref else scores[g.qk[0]].new_zeros(())
        mean = torch.cat([raw[n].reshape(-1).to(target) for n in g.qk]).mean()
        factor = target / mean if mean > 0 else target.new_zeros(())
        for n in g.qk:
            scores[n] = raw[n].to(target) * factor
    return scores
