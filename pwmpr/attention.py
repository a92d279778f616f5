"""Scores for attention's query and key weights, where PWMP is blind (docs/method.md, "Attention: growing q and k").

:func:`attention_pwmp_scores` (``pwmp-attn``) runs PWMP through the tangent of the real attention;
:func:`qk_scores` (``pwmp-qk-gradient``, ``pwmp-qk-head``, ``pwmp-qk-random``) scores q and k by ``|dL/dw|``, head
importance or a constant, rescaled to the attention's value and output PWMP scores. Attentions are found by the
engine (:attr:`pwmpr.graph.UnitGraph.attention`), so a model needs no hook.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from pwmpr.errors import PwmprError
from pwmpr.gradient_score import gradient_scores
from pwmpr.graph import UnitGraph, build_unit_graph
from pwmpr.graph.mode import WatchMode, WeightView, tensors_in
from pwmpr.graph.ops import Kind, Op
from pwmpr.losses import cross_entropy
from pwmpr.masks import MaskSet
from pwmpr.probe import class_scores, device_of, normalize_input_shape, training_mode
from pwmpr.score import pwmp_scores
from pwmpr.surrogate import linear_surrogate, path_gradients

Batch = tuple[Tensor, Tensor] | Sequence[Tensor]
#: Samples of a batch that the attention-aware rules read: each scores its attention per sample (a scoring net of
#: this batch size for pwmp-attn), so the cost grows with it.
ATTENTION_SAMPLES = 32


@dataclass(frozen=True)
class QKGroup:
    """The masked weight entries of one attention: query and key entries, and value and output entries.

    Each maps a weight name to a bool mask of its shape; ``heads`` gives the head of each q/k entry (-1 elsewhere).
    """

    site: int
    name: str
    qk: dict[str, Tensor]
    others: dict[str, Tensor]
    heads: dict[str, Tensor] = field(default_factory=dict)


def _entries(graph: UnitGraph, ids: Tensor, shapes: Mapping[str, torch.Size], heads: Tensor | None = None
             ) -> dict[str, tuple[Tensor, Tensor]]:
    """The weight entries that produce units ``ids``: ``{weight: (bool mask, head of each entry or -1)}``."""
    out: dict[str, tuple[Tensor, Tensor]] = {}
    if ids.numel() == 0:
        return out
    head = heads if heads is not None else torch.full_like(ids, -1)
    g, local = graph.owner(ids)
    for gi, li, hi in zip(g.tolist(), local.tolist(), head.tolist(), strict=True):
        units = _layer_units(graph, gi, li)
        links = {graph.groups[u].link for u, _ in units}
        if not units or len({graph.links[i].param for i in links}) != 1:
            continue  # not one weight's output (a residual sum of two, a fixed link)
        for u, lu in units:
            link = graph.links[graph.groups[u].link]
            if link.param is None or link.param not in shapes:
                continue
            width = link.n_in * link.n_kernel
            positions = link.flat_positions(lu * width + torch.arange(width))
            mask, entry_head = out.setdefault(link.param, (torch.zeros(shapes[link.param], dtype=torch.bool),
                                                           torch.full(shapes[link.param], -1, dtype=torch.long)))
            mask.view(-1)[positions] = True
            entry_head.view(-1)[positions] = hi
    return out


def _layer_units(graph: UnitGraph, g: int, unit: int) -> list[tuple[int, int]]:
    """The layer units (group, unit) that unit ``unit`` of group ``g`` is, through merges: one for a layer's unit,
    several where a merge joins the uses of a weight (the class token's q and the patch tokens' q)."""
    group = graph.groups[g]
    if group.kind == "layer":
        return [(g, unit)]
    if group.kind != "merge":
        return []
    out: list[tuple[int, int]] = []
    for s in range(group.src_group.shape[1]):
        if int(group.src_group[unit, s]) >= 0:
            out += _layer_units(graph, int(group.src_group[unit, s]), int(group.src_unit[unit, s]))
    return out


def qk_groups(model: nn.Module, masks: Mapping[str, Tensor], input_shape: Sequence[int],
              graph: UnitGraph | None = None) -> list[QKGroup]:
    """One :class:`QKGroup` per attention of ``model`` whose query or key weights are masked."""
    graph = graph or build_unit_graph(model, normalize_input_shape(input_shape))
    shapes = {n: m.shape for n, m in masks.items()}
    groups = []
    for i, site in enumerate(graph.attention):
        qk = {**_entries(graph, site.q, shapes, site.q_heads)}
        for name, (mask, head) in _entries(graph, site.k, shapes, site.k_heads).items():
            if name in qk:
                qk[name] = (qk[name][0] | mask, torch.maximum(qk[name][1], head))
            else:
                qk[name] = (mask, head)
        if not qk:
            continue
        others = {n: m for n, (m, _) in _entries(graph, site.v, shapes).items()}
        out_groups = set(graph.owner(site.out_units)[0].tolist())
        for link in graph.links:
            if link.src in out_groups and link.param in shapes:
                others[link.param] = others.get(link.param, torch.zeros(shapes[link.param], dtype=torch.bool)) | True
        others = {n: m & ~qk[n][0] if n in qk else m for n, m in others.items()}
        groups.append(QKGroup(i, site.name, {n: m for n, (m, _) in qk.items()}, {n: m for n, m in others.items()
                                                                                   if m.any()},
                              {n: h for n, (_, h) in qk.items()}))
    return groups


def _checked_batch(batch: Batch | None, device: torch.device, limit: int | None = None) -> tuple[Tensor, Tensor]:
    if batch is None:
        raise PwmprError("this growth rule scores attention on a real batch, but none was given")
    if not isinstance(batch, Sequence) or len(batch) != 2 or not all(isinstance(t, Tensor) for t in batch):
        raise PwmprError(f"batch must be a pair of tensors (x, y), got {type(batch).__name__}")
    x, y = batch[0].to(device), batch[1].to(device)
    return (x[:limit], y[:limit]) if limit else (x, y)


def _effective(model: nn.Module, masks: MaskSet, dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """Parameters with ``W * mask`` in place of each masked weight, and cloned buffers (train-mode BN updates
    them), for ``functional_call``."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    for n in masks:
        params[n] = params[n] * masks[n].to(device=params[n].device, dtype=params[n].dtype)
    tensors = {**{n: b.clone() for n, b in model.named_buffers()}, **params}
    if dtype is not None:
        tensors = {n: t.to(dtype) if t.is_floating_point() else t for n, t in tensors.items()}
    return tensors


# -- the real attention of a batch, site by site ---------------------------------------------------------------------


@dataclass
class SiteRecord:
    """What one attention saw on a real batch (absolute values, detached), and how its forward combined them."""

    a: Tensor | None = None
    b: Tensor | None = None
    logits: Callable[[Tensor, Tensor], Tensor] | None = None
    attention: Tensor | None = None
    dim: int = -1
    v: Tensor | None = None
    mix: Callable[[Tensor, Tensor], Tensor] | None = None
    output: Tensor | None = None
    scale: float = 1.0
    visible: Tensor | None = None


_ACT, _LOGITS, _ATTENTION = "activation", "logits", "attention"


class _Recorder(WatchMode):
    """Runs a model's real forward and records every attention site (in the order :mod:`pwmpr.graph` numbers
    them): the q-k product's operands, the softmax output, the values and the output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.records: list[SiteRecord] = []
        self._site: dict[int, int] = {}  # id(tensor) -> site, for logits and attention weights

    def handle(self, op: Op, func, args: tuple, kwargs: dict) -> Any:
        out = func(*args, **kwargs)
        values = [(t, v) for t, v in self.tracked(args, kwargs) if not isinstance(v, WeightView)]
        kinds = [v for _, v in values]
        if not kinds:
            if op.kind is not Kind.CONTRACT:
                self.weight_result(op, func, args, kwargs, out, [v for _, v in self.tracked(args, kwargs)])
            return out
        if op.kind is Kind.ATTENTION:
            self._sdpa(args, kwargs, out)
        elif op.kind is Kind.CONTRACT and kinds.count(_ACT) >= 2:
            self._logits(op, args, out)
        elif op.kind is Kind.CONTRACT and _ATTENTION in kinds and _ACT in kinds:
            self._mix(op, args, out)
        elif op.kind is Kind.SOFTMAX and kinds == [_LOGITS]:
            site = self._site[id(args[0])]
            rec = self.records[site]
            rec.attention, rec.dim = out.detach().abs(), _dim(args, kwargs)
            self._mark(out, _ATTENTION, site)
        elif op.kind is not Kind.CONST:
            kind = _ACT if _ACT in kinds else kinds[0]
            site = next((self._site[id(t)] for t, v in values if v != _ACT and id(t) in self._site), None)
            self._mark(out, kind, site)
        return out

    def _mark(self, out: Any, kind: str, site: int | None = None) -> None:
        for t in tensors_in(out):
            self.put(t, kind)
            if site is not None:
                self._site[id(t)] = site

    def _logits(self, op: Op, args: tuple, out: Tensor) -> None:
        a, b, combine = _operands(op, args)
        self.records.append(SiteRecord(a=a.detach().abs(), b=b.detach().abs(), logits=combine))
        self._mark(out, _LOGITS, len(self.records) - 1)

    def _mix(self, op: Op, args: tuple, out: Tensor) -> None:
        w, v, combine = _operands(op, args)
        if self.get(w) != _ATTENTION:
            raise PwmprError("an attention multiplies values by attention weights from the right: not supported")
        rec = self.records[self._site[id(w)]]
        rec.v, rec.mix, rec.output = v.detach().abs(), combine, out
        self._mark(out, _ACT)

    def _sdpa(self, args: tuple, kwargs: dict, out: Tensor) -> None:
        q, k, v = (_arg(args, kwargs, i, n) for i, n in enumerate(("query", "key", "value")))
        scale = _arg(args, kwargs, 6, "scale") or q.shape[-1] ** -0.5
        visible = _visible(q, k, _arg(args, kwargs, 3, "attn_mask"), _arg(args, kwargs, 5, "is_causal", False))
        logits = (q @ k.transpose(-2, -1)) * scale
        attention = torch.softmax(logits.masked_fill(~visible, float("-inf")), dim=-1)
        self.records.append(SiteRecord(a=q.detach().abs(), b=k.detach().abs().transpose(-2, -1),
                                       logits=torch.matmul, attention=attention.detach(), v=v.detach().abs(),
                                       mix=torch.matmul, output=out, scale=scale, visible=visible))
        self._mark(out, _ACT)


def _arg(args: tuple, kwargs: dict, pos: int, name: str, default: Any = None) -> Any:
    return kwargs.get(name, args[pos] if len(args) > pos else default)


def _dim(args: tuple, kwargs: dict) -> int:
    return int(_arg(args, kwargs, 1, "dim", -1))


def _visible(q: Tensor, k: Tensor, mask: Tensor | None, causal: bool) -> Tensor:
    visible = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device)
    if causal:
        visible = visible.tril()
    if mask is not None:
        visible = visible & (mask if mask.dtype == torch.bool else torch.isfinite(mask))
    return visible


def _operands(op: Op, args: tuple) -> tuple[Tensor, Tensor, Callable[[Tensor, Tensor], Tensor]]:
    """The two operands of a contraction and a function recomputing it from new ones."""
    if op.name == "einsum":
        equation = args[0]
        operands = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
        return operands[0], operands[1], lambda a, b: torch.einsum(equation, a, b)
    if op.name == "rmatmul":
        return args[1], args[0], torch.matmul
    return args[0], args[1], torch.matmul


def record_attention(model: nn.Module, masks: MaskSet, x: Tensor, *, train: bool, dtype: torch.dtype | None,
                     grad: bool) -> tuple[Tensor, list[SiteRecord]]:
    """Run ``model`` on ``x`` with weights ``W * mask``; return its output and every attention site's record."""
    tensors = _effective(model, masks, dtype)
    tokens = not x.is_floating_point()  # token ids stay ids (an embedding reads them)
    if dtype is not None and not tokens:
        x = x.to(dtype)
    if grad and not tokens:
        x = x.detach().requires_grad_(True)  # so every site's output has a gradient to read
    elif grad:  # ids carry no gradient: the weights do, so that every site's output has one to read
        names = dict(model.named_parameters())
        tensors = {n: t.detach().requires_grad_(True) if n in names and t.is_floating_point() else t
                   for n, t in tensors.items()}
    recorder = _Recorder(model)
    recorder.put(x, _ACT)
    with training_mode(model, train), torch.set_grad_enabled(grad), recorder.watching(model):
        out = functional_call(model, tensors, (x,))
    return out, recorder.records


# -- pwmp-attn: PWMP through the tangent of the real attention --------------------------------------------------


@torch.enable_grad()
def attention_pwmp_scores(model: nn.Module, masks: Mapping[str, Tensor], input_shape: Sequence[int],
                          batch: Batch | None) -> dict[str, Tensor]:
    """PWMP scores with every attention replaced by its tangent at a real batch, in absolute values (``pwmp-attn``).

    Uses the batch's first :data:`ATTENTION_SAMPLES` inputs; scores are the mean over them (docs/method.md,
    "Attention: growing q and k"). A model without attention gets exactly :func:`pwmpr.score.pwmp_scores`.

    Raises:
        PwmprError: bad masks, input shape or batch.
    """
    shape = normalize_input_shape(input_shape)
    graph = build_unit_graph(model, shape)
    if not graph.attention:
        return pwmp_scores(model, masks, shape)
    masks = MaskSet.checked(model, masks)
    device = device_of(model)
    x, _ = _checked_batch(batch, device, ATTENTION_SAMPLES)
    with torch.no_grad():
        _, records = record_attention(model, masks, x, train=False, dtype=torch.float64, grad=False)
    surrogate = linear_surrogate(model, masks)
    surrogate.forward.records = records
    params = dict(surrogate.named_parameters())
    leaves = [params[n] for n in masks]
    for p in leaves:
        p.requires_grad_(True)
    found = path_gradients(surrogate, leaves, shape, batch=len(x))
    if found is None:
        return {n: torch.zeros_like(p) for n, p in zip(masks, leaves, strict=True)}
    _, grads = found
    return {n: (g.detach() / len(x) if g is not None else torch.zeros_like(p))
            for n, p, g in zip(masks, leaves, grads, strict=True)}


# -- q/k scores beside PWMP: gradient, head importance, random ---------------------------------------------------


@torch.enable_grad()
def head_importance(model: nn.Module, masks: Mapping[str, Tensor], input_shape: Sequence[int], batch: Batch,
                    loss_fn: Callable[..., Tensor] = cross_entropy, *, train: bool = True,
                    graph: UnitGraph | None = None) -> dict[int, Tensor]:
    """Michel et al. (2019)'s head importance ``I_h = mean_x |dL(x)/dxi_h|`` of the heads of every attention.

    Returns:
        ``{attention site: float64 tensor (heads,)}``, all entries >= 0, on the model's device.
    """
    masks = MaskSet.checked(model, masks)
    graph = graph or build_unit_graph(model, normalize_input_shape(input_shape))
    x, y = _checked_batch(batch, device_of(model), ATTENTION_SAMPLES)
    out, records = record_attention(model, masks, x, train=train, dtype=None, grad=True)
    outputs = [r.output for r in records]
    if not outputs or len(outputs) != len(graph.attention):
        return {}
    loss = loss_fn(class_scores(out), y, reduction="sum")
    grads = torch.autograd.grad(loss, outputs, allow_unused=True)
    result = {}
    n = len(x)
    for i, (site, o, g) in enumerate(zip(graph.attention, outputs, grads, strict=True)):
        heads = int(site.output_heads.max()) + 1 if site.output_heads.numel() else 0
        layout = site.output
        if heads == 0 or g is None:
            result[i] = torch.zeros(max(heads, 1), dtype=torch.float64, device=o.device)
            continue
        if tuple(o.shape[1:]) != tuple(layout.shape[1:]) or o.shape[0] != n * layout.shape[0]:
            raise PwmprError(f"attention {site.name}: its output is laid out {tuple(o.shape)} for {n} samples but "
                             f"{tuple(layout.shape)} for one; pwmpr cannot tell its samples apart")
        head = site.output_heads.repeat(n, *([1] * (layout.dim() - 1))).to(o.device)
        sample = (torch.arange(o.shape[0], device=o.device) // layout.shape[0]).view(-1, *([1] * (layout.dim() - 1)))
        sample = sample.expand(o.shape)
        contrib = (o.detach() * g).double()
        keep = head >= 0
        per = torch.zeros(n, heads, dtype=torch.float64, device=o.device)
        per.index_put_((sample[keep], head[keep]), contrib[keep], accumulate=True)
        result[i] = per.abs().mean(0)
    return result


QK_KINDS = ("gradient", "head", "random")


@torch.enable_grad()
def qk_scores(model: nn.Module, masks: Mapping[str, Tensor], input_shape: Sequence[int], batch: Batch | None,
              kind: str) -> dict[str, Tensor]:
    """PWMP scores, with the query and key weights of every attention scored by ``kind`` instead.

    ``kind``: ``gradient`` (``|dL/dW_eff|`` on ``batch``), ``head`` (:func:`head_importance` of the entry's head) or
    ``random`` (a constant). Each attention's q/k scores are scaled so their mean equals the mean PWMP score of its
    value and output entries. A model without attention gets exactly :func:`pwmpr.score.pwmp_scores`.

    Raises:
        PwmprError: unknown ``kind``, bad masks, input shape or batch.
    """
    if kind not in QK_KINDS:
        raise PwmprError(f"q/k score kind must be one of {', '.join(QK_KINDS)}; got {kind!r}")
    shape = normalize_input_shape(input_shape)
    scores = pwmp_scores(model, masks, shape)
    graph = build_unit_graph(model, shape)
    groups = qk_groups(model, masks, shape, graph)
    if not groups:
        return scores
    masks = MaskSet.checked(model, masks)
    qk_names = list(dict.fromkeys(n for g in groups for n in g.qk))
    if kind == "gradient":
        # The gradient of the masked network (every layer at its mask: in a hybrid or shrink step the edges just
        # dropped no longer act), kept for q and k only.
        grads = gradient_scores(model, masks, _checked_batch(batch, device_of(model)), cross_entropy)
        raw = {n: grads[n] for n in qk_names}
    elif kind == "head":
        importance = head_importance(model, masks, shape, _checked_batch(batch, device_of(model)), graph=graph)
        raw = {n: torch.zeros_like(scores[n]) for n in qk_names}
        for g in groups:
            imp = importance.get(g.site)
            if imp is None:
                continue
            for n, head in g.heads.items():
                h = head.to(imp.device)
                raw[n] = torch.where(h >= 0, imp[h.clamp(min=0, max=imp.numel() - 1)].to(raw[n]), raw[n])
    else:
        raw = {n: torch.ones_like(scores[n]) for n in qk_names}
    qk_all = {n for g in groups for n in g.qk}
    non_qk = [n for n in scores if n not in qk_all]
    for g in groups:
        ref = g.others or {n: torch.ones_like(masks[n], dtype=torch.bool) for n in non_qk}
        parts = [scores[n][m.to(scores[n].device)] for n, m in ref.items()]
        first = scores[next(iter(g.qk))]
        target = torch.cat(parts).mean() if parts else first.new_zeros(())
        mean = torch.cat([raw[n][m.to(raw[n].device)].to(target) for n, m in g.qk.items()]).mean()
        factor = target / mean if mean > 0 else target.new_zeros(())
        for n, m in g.qk.items():
            m = m.to(scores[n].device)
            scores[n] = torch.where(m, raw[n].to(target) * factor, scores[n])
    return scores


def has_attention(model: nn.Module, input_shape: Sequence[int]) -> bool:
    """True when the model's forward holds an attention (so the attention-aware rules need a batch)."""
    return bool(build_unit_graph(model, normalize_input_shape(input_shape)).attention)
