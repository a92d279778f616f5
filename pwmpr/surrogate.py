"""The linear |W| scoring network of PWMP, SynFlow and the tau-core (docs/method.md, Score and Operations).

:func:`linear_surrogate` deep-copies a model into float64 with every parameter made non-negative and each prunable
weight replaced by its effective value ``|W| * mask``. Its forward then runs under :class:`Linearizer`, a
:class:`pwmpr.graph.mode.WatchMode` that swaps every op computed from the input for a linear stand-in, whether a
module or a plain forward calls it: activations become the identity, norms a positive per-unit scale, max pooling
average pooling, additive constants (biases, embeddings, class tokens) zero, the product of two activations their
sum (a gate), and attention the uniform average over the positions a mask leaves visible. On an all-ones input every
value is then a sum of path products, so ``dR/dW_eff`` is the exact PWMP score. An op without a stand-in raises a
PwmprError naming the module, the op and why.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pwmpr.errors import PwmprError
from pwmpr.graph.mode import WatchMode, WeightView, tensors_in
from pwmpr.graph.ops import MAX_LIKE, Kind, Op
from pwmpr.masks import MaskSet, prunable
from pwmpr.probe import device_of, run_forward, sum_outputs

# What a tracked tensor of the scoring net holds; DATA is computed from the input but carries no path (a mask);
# TANGENT_LOGITS and TANGENT_ATTENTION are an attention's q-k tangent and softmax tangent (pwmp-attn).
ACT, LOGITS, ATTENTION, DATA = "activation", "logits", "attention", "data"
TANGENT_LOGITS, TANGENT_ATTENTION = "tangent logits", "tangent attention"
# Called after each use of a prunable weight: (weight name, positions of the entries used or None, output, the dim
# of the output's units) -> the output to go on with.
WeightHook = Callable[[str, "Tensor | None", Tensor, int], Tensor]

_DROPOUTS = {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
             "feature_dropout"}


@torch.no_grad()
def linear_surrogate(model: nn.Module, masks: Mapping[str, Tensor] | None = None) -> nn.Module:
    """A deep copy of ``model`` turned into the linear |W| scoring network (docs/method.md, Score).

    The copy is float64, in eval mode, on the model's device, with every parameter non-negative and without
    ``requires_grad``; each prunable weight holds ``|W| * mask`` (weights without a mask stay dense). Torch hooks of
    the original are dropped. Its forward runs every op through its linear stand-in (:class:`Linearizer`).

    Raises:
        PwmprError: a mask with an unknown name or a wrong shape.
    """
    masks = MaskSet.checked(model, masks)
    device = device_of(model)
    surrogate = copy.deepcopy(model).double()
    surrogate.eval()
    for m in surrogate.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            d = getattr(m, attr, None)
            if d is not None:
                d.clear()
    params = dict(surrogate.named_parameters())
    for p in params.values():
        p.abs_()
    for name in prunable(surrogate):
        if name in masks:
            w = params[name]
            w.mul_(masks[name].to(device=w.device, dtype=w.dtype))
    for p in surrogate.parameters():
        p.requires_grad_(False)
        p.grad = None
    surrogate.forward = _LinearizedForward(surrogate)
    return surrogate.to(device)


class _LinearizedForward:
    """The scoring copy's forward: the model's own, run under a :class:`Linearizer`."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.on_weight_output: WeightHook | None = None
        self.records: list | None = None  # pwmp-attn: each attention's real batch (pwmpr.attention.SiteRecord)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        mode = Linearizer(self.module, self.on_weight_output, self.records)
        for t in tensors_in(args, kwargs):
            mode.put(t, ACT)
        with mode.watching(self.module, inside=True):
            out = type(self.module).forward(self.module, *args, **kwargs)
        for t in tensors_in(out):
            if mode.get(t) in (LOGITS, ATTENTION):
                raise PwmprError("the model returns attention scores, which PWMP scoring cannot use as outputs")
        return out

    def __deepcopy__(self, memo: dict) -> _LinearizedForward:
        return _LinearizedForward(memo.get(id(self.module), self.module))


def surrogate_forward(surrogate: nn.Module, x: Tensor, on_weight_output: WeightHook | None = None) -> Any:
    """``surrogate(x)``, calling ``on_weight_output`` after each use of a prunable weight (the tau-core's hook)."""
    forward = surrogate.forward
    if not isinstance(forward, _LinearizedForward):
        raise PwmprError("surrogate_forward needs a scoring net made by linear_surrogate")
    forward.on_weight_output = on_weight_output
    try:
        return run_forward(surrogate, x)
    finally:
        forward.on_weight_output = None


# (log2 of the all-ones input's value, log2 of a factor on R) tried in turn: a deep net's path sums can exceed
# float64's range (a DenseNet's reach 1e280 within three blocks), and a smaller input scales every path alike.
_SCALES = ((0, 0), (-600, 0), (-1000, 0), (-1000, -400))


def path_gradients(surrogate: nn.Module, leaves: list[Tensor], shape: tuple[int, ...], batch: int = 1
                   ) -> tuple[Tensor, list[Tensor | None]] | None:
    """``(R, dR/dleaf)`` for R the sum of the scoring net's outputs on an all-ones input of ``batch`` samples.

    Where float64 would overflow, the input and R are scaled by powers of two, which multiplies every path, so every
    score, by one common factor (rankings and proportional draws are unchanged). None when no leaf reaches R.

    Raises:
        PwmprError: the path sums overflow float64 at every scale.
    """
    device = leaves[0].device if leaves else torch.device("cpu")
    for a, b in _SCALES:
        x = torch.full((batch, *shape), 2.0 ** a, dtype=torch.float64, device=device)
        total = sum_outputs(run_forward(surrogate, x)) * 2.0 ** b
        if not total.requires_grad:
            return None
        if not _finite(total):
            continue
        grads = list(torch.autograd.grad(total, leaves, allow_unused=True))
        if all(g is None or _finite(g) for g in grads):
            return total.detach(), grads
    raise PwmprError("the scoring net's path sums overflow float64 even with the input scaled by 2^-1000: the "
                     "network is too deep or its weights too large for path sums")


def scoring_input(surrogate: nn.Module, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """The all-ones input scaled (by a power of two) so that the scoring net's outputs stay finite."""
    with torch.no_grad():
        for a, _ in _SCALES:
            x = torch.full((1, *shape), 2.0 ** a, dtype=torch.float64, device=device)
            if _finite(sum_outputs(run_forward(surrogate, x))):
                return x
    raise PwmprError("the scoring net's path sums overflow float64 even with the input scaled by 2^-1000")


def _finite(t: Tensor) -> bool:
    """True when every entry is finite (a tensor without data, on the meta device, counts as finite)."""
    return t.device.type == "meta" or bool(torch.isfinite(t).all())


class Linearizer(WatchMode):
    """Runs a scoring copy's forward with every op on an activation replaced by its linear stand-in."""

    def __init__(self, model: nn.Module, on_weight_output: WeightHook | None = None, records: list | None = None
                 ) -> None:
        super().__init__(model)
        self.on_weight_output = on_weight_output
        self.records = records
        self.sites = 0  # attention sites seen, numbered as pwmpr.graph numbers them
        self._site: dict[int, int] = {}  # id(tensor) -> site, for tangent logits and attention

    def handle(self, op: Op, func, args: tuple, kwargs: dict) -> Any:
        values = self.tracked(args, kwargs)
        if any(v in (TANGENT_LOGITS, TANGENT_ATTENTION) for _, v in values):
            return self._tangent(op, func, args, kwargs, values)
        views = [v for _, v in values if isinstance(v, WeightView)]
        data = [t for t, v in values if v == DATA]
        acts = [(t, v) for t, v in values if not isinstance(v, WeightView) and v != DATA]
        if data:
            if acts and op.kind in (Kind.MOVE, Kind.SETITEM):
                raise self.refuse(op, "it indexes with positions computed from the input (a data-dependent "
                                      "selection has no stand-in)")
            if not acts and not views:  # arithmetic on masks and indices: still data
                out = func(*args, **kwargs)
                return self._mark(out, DATA) if op.kind is not Kind.CONST else out
        if op.kind is Kind.CONST:
            out = func(*args, **kwargs)
            return self._mark(out, DATA) if acts and not views else out
        if op.kind is Kind.CONTRACT:
            return self._contract(op, func, args, kwargs)
        if not acts:
            return self._weight_op(op, func, args, kwargs, views)
        if views:
            raise self.refuse(op, "it combines an activation with a prunable weight elementwise")
        if op.kind is None:
            raise self.refuse(op, "pwmpr has no linear stand-in for this op (see docs/method.md, Operations)")
        return getattr(self, f"_{op.kind.value}")(op, func, args, kwargs, acts)

    # -- weights --------------------------------------------------------------------------------------------------
    def _weight_op(self, op: Op, func, args: tuple, kwargs: dict, views: list[WeightView]) -> Any:
        """Transforms of a prunable weight (a cast, a standardization, a view): the weight enters as ``|W| * mask``."""
        if op.kind is Kind.MOVE:
            out = func(*args, **kwargs)
        elif op.kind is Kind.SAME or op.kind is Kind.BINARY and op.name in ("add", "sub", "rsub"):
            out = args[0] if isinstance(args[0], Tensor) and self.get(args[0]) is not None else args[1]
        elif op.kind is Kind.BINARY and op.name in ("mul", "multiply", "div", "divide", "true_divide"):
            out = func(*args, **kwargs)  # a scale stays a factor of every path through the weight
        elif op.kind in (Kind.REDUCE, Kind.CONST):
            return func(*args, **kwargs)  # statistics of a weight are constants
        else:
            raise self.refuse(op, "pwmpr has no linear stand-in for this op on a prunable weight")
        if out is not args[0] or op.kind is Kind.MOVE:
            self.weight_result(op, func, args, kwargs, out, views)
        return out

    # -- elementwise and data movement ----------------------------------------------------------------------------
    def _mark(self, out: Any, what: str) -> Any:
        for t in tensors_in(out):
            self.put(t, what)
        return out

    def _kind(self, acts: list[tuple[Tensor, Any]]) -> str:
        kinds = {v for _, v in acts}
        if len(kinds) > 1:
            raise PwmprError(f"{self.where()} combines attention scores with activations, which PWMP scoring cannot "
                             "linearize")
        return kinds.pop()

    def _move(self, op, func, args, kwargs, acts) -> Any:
        kind = self._kind(acts)
        if op.name in ("cat", "concat", "concatenate", "stack", "hstack", "vstack", "dstack"):
            tensors = args[0] if args else kwargs["tensors"]
            # a constant joined to activations is an additive shift: zero (a class token, say)
            joined = [t if self.get(t) is not None else torch.zeros_like(t) for t in tensors]
            args = (joined, *args[1:]) if args else args
            if not args:
                kwargs = {**kwargs, "tensors": joined}
        return self._mark(func(*args, **kwargs), kind)

    def _same(self, op, func, args, kwargs, acts) -> Any:
        kind = self._kind(acts)
        x = args[0]
        if kind != ACT or self.get(x) is None:
            return self._mark(func(*args, **kwargs) if op.name not in _DROPOUTS else x, kind)
        if op.name in ("batch_norm", "instance_norm"):
            weight = _arg(args, kwargs, 3, "weight")
            running_var = _arg(args, kwargs, 2, "running_var")
            eps = _arg(args, kwargs, 7, "eps", 1e-5)
            scale = _positive(weight, x.shape[1], x)
            if op.name == "batch_norm" and running_var is not None:
                scale = scale / torch.sqrt(running_var.to(x.dtype) + eps)
            out = x * scale.view(1, -1, *([1] * (x.dim() - 2)))
        elif op.name == "group_norm":
            out = x * _positive(_arg(args, kwargs, 2, "weight"), x.shape[1], x).view(1, -1, *([1] * (x.dim() - 2)))
        elif op.name in ("layer_norm", "rms_norm"):
            weight = _arg(args, kwargs, 2, "weight")
            out = x * weight.abs() if weight is not None else x.clone()
        elif _inplace(op, args, kwargs):
            out = x  # an activation's stand-in is the identity: in place, nothing to do
        else:
            out = x.clone()  # a new tensor, as the op returns one: later in-place ops must not reach x
        return self._mark(out, ACT)

    def _spatial(self, op, func, args, kwargs, acts) -> Any:
        x = args[0]
        if op.name not in MAX_LIKE:
            return self._mark(func(*args, **kwargs), ACT)
        nd = int(re.search(r"pool(\d)d", op.name).group(1))
        if op.name.startswith("adaptive"):
            out = getattr(F, f"adaptive_avg_pool{nd}d")(x, _arg(args, kwargs, 1, "output_size"))
        elif op.name.startswith("fractional"):
            with torch.no_grad():
                size = _first_tensor(func(*(a.detach() if isinstance(a, Tensor) else a for a in args),
                                          **kwargs)).shape[2:]
            out = getattr(F, f"adaptive_avg_pool{nd}d")(x, tuple(size))
        elif op.name.startswith("lp_pool"):
            out = getattr(F, f"avg_pool{nd}d")(x, _arg(args, kwargs, 2, "kernel_size"),
                                               _arg(args, kwargs, 3, "stride"), 0, _arg(args, kwargs, 4,
                                                                                      "ceil_mode", False))
        else:
            dilation = _arg(args, kwargs, 4, "dilation", 1)
            if any(d != 1 for d in (dilation if isinstance(dilation, (tuple, list)) else [dilation])):
                raise self.refuse(op, "max pooling with dilation has no average-pooling stand-in")
            out = getattr(F, f"avg_pool{nd}d")(x, _arg(args, kwargs, 1, "kernel_size"), _arg(args, kwargs, 2,
                                                                                             "stride"),
                                               _arg(args, kwargs, 3, "padding", 0),
                                               ceil_mode=_arg(args, kwargs, 5, "ceil_mode", False),
                                               count_include_pad=False)
        if "with_indices" in op.name or _arg(args, kwargs, 6 if "max_pool" in op.name else 2, "return_indices",
                                            False) is True:
            return self._mark(out, ACT), torch.zeros(out.shape, dtype=torch.long, device=out.device)
        return self._mark(out, ACT)

    def _reduce(self, op, func, args, kwargs, acts) -> Any:
        kind = self._kind(acts)
        if len(args) > 1 and isinstance(args[1], Tensor):  # torch.max(a, b): elementwise
            return self._binary(Op("maximum", Kind.BINARY), func, args, kwargs, acts)
        if kind != ACT or op.name in ("mean", "sum", "nansum"):
            return self._mark(func(*args, **kwargs), kind)
        x = args[0]
        with torch.no_grad():
            real = func(*_detached(args), **_detached(kwargs))
        ref = _first_tensor(real)
        dims = _reduced(tuple(x.shape), tuple(ref.shape), args, kwargs, op)
        out = x.mean(dim=dims, keepdim=ref.dim() == x.dim()).reshape(ref.shape)  # max-like reductions: the mean
        out = self._mark(out, ACT)
        if isinstance(real, tuple):  # (values, indices): the indices of the real reduction, the mean as values
            return type(real)((out, *real[1:]))
        return out

    def _binary(self, op, func, args, kwargs, acts) -> Any:
        a = args[0]
        b = args[1] if len(args) > 1 else kwargs.get("other")
        kind = self._kind(acts)
        if kind != ACT:  # attention scores scaled, masked or shifted by constants keep their meaning
            if len(acts) > 1:
                raise self.refuse(op, "it combines attention scores with another activation")
            return self._mark(func(*args, **kwargs), kind)
        ta, tb = self.get(a) == ACT, self.get(b) == ACT
        if DATA in (self.get(a), self.get(b)):  # a mask or a comparison: x * (x > 0) is a hand-written activation
            t = a if ta else b
            out = t.expand(torch.broadcast_shapes(a.shape, b.shape)).clone()
        elif ta and tb:
            alpha = abs(kwargs.get("alpha", 1))
            bb = b * alpha if alpha != 1 else b
            # docs/method.md, Operations: a product (or quotient) of two activations is linearized around 1: a + b
            out = (a + bb) / 2 if op.name in ("maximum", "minimum", "fmax", "fmin") else a + bb
        else:
            t, c = (a, b) if ta else (b, a)
            c = abs(c) if isinstance(c, (int, float)) else c
            if op.name in ("mul", "multiply"):
                out = t * c
            elif op.name in ("div", "divide", "true_divide") and ta:
                out = t / c
            else:  # a shift, a bound, or 1 / t: the activation itself
                out = t.expand(torch.broadcast_shapes(t.shape, c.shape if isinstance(c, Tensor) else ())).clone()
        if op.inplace:
            a.copy_(out)
            return self._mark(a, ACT)
        return self._mark(out, ACT)

    def _softmax(self, op, func, args, kwargs, acts) -> Any:
        x = args[0]
        if self.get(x) != LOGITS:
            raise self.refuse(op, "a softmax of an activation that is not attention logits (q @ k) mixes the units it "
                                  "normalizes over; pwmpr has no per-unit stand-in for it")
        dim = _arg(args, kwargs, 1, "dim", -1)
        visible = torch.isfinite(x.detach()).to(x.dtype)
        weights = visible / visible.sum(dim=dim, keepdim=True).clamp(min=1)
        return self._mark(weights, ATTENTION)

    def _attention(self, op, func, args, kwargs, acts) -> Any:
        q, k, v = (_arg(args, kwargs, i, n) for i, n in enumerate(("query", "key", "value")))
        if self.get(v) != ACT:
            raise self.refuse(op, "its values are not computed from the input")
        site = self.sites
        self.sites += 1
        if self.records is not None:  # pwmp-attn: the tangent of the real attention
            rec = self.records[site]
            ds = rec.scale * (q @ rec.b + rec.a @ k.transpose(-2, -1))
            ds = ds.masked_fill(~rec.visible, 0.0)
            out = rec.attention @ v + _softmax_tangent(rec.attention, ds, -1) @ rec.v
            return self._mark(out, ACT)
        mask = _arg(args, kwargs, 3, "attn_mask")
        causal = _arg(args, kwargs, 5, "is_causal", False)
        visible = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=v.device)
        if causal:
            visible = visible.tril()
        if mask is not None:
            visible = visible & (mask if mask.dtype == torch.bool else torch.isfinite(mask))
        weights = visible.to(v.dtype)
        weights = weights / weights.sum(-1, keepdim=True).clamp(min=1)
        if _arg(args, kwargs, 7, "enable_gqa", False) and v.shape[-3] != q.shape[-3]:
            v = v.repeat_interleave(q.shape[-3] // v.shape[-3], dim=-3)
        return self._mark(weights @ v, ACT)

    def _pad(self, op, func, args, kwargs, acts) -> Any:
        x = args[0]
        mode = _arg(args, kwargs, 2, "mode", "constant")
        if op.name == "constant_pad_nd" or mode == "constant":
            return self._mark(F.pad(x, _arg(args, kwargs, 1, "pad")), ACT)  # the padded value: a shift, zero
        return self._mark(func(*args, **kwargs), ACT)

    def _where(self, op, func, args, kwargs, acts) -> Any:
        cond, a, b = args[0], args[1], args[2]
        if self.get(cond) in (ACT, LOGITS, ATTENTION):
            raise self.refuse(op, "its condition is an activation")
        if self.get(cond) == DATA:  # a selection that follows the input: (a + b) / 2, like max
            ta, tb = self.get(a) == ACT, self.get(b) == ACT
            shape = torch.broadcast_shapes(*(t.shape for t in (a, b) if isinstance(t, Tensor)))
            out = (a + b) / 2 if ta and tb else (a if ta else b).expand(shape).clone()
            return self._mark(out, ACT)
        a = a if self.get(a) is not None else torch.zeros_like(torch.as_tensor(a, dtype=torch.float64))
        b = b if self.get(b) is not None else torch.zeros_like(torch.as_tensor(b, dtype=torch.float64))
        return self._mark(torch.where(cond, a, b), ACT)

    def _masked_fill(self, op, func, args, kwargs, acts) -> Any:
        kind = self._kind(acts)
        if kind != ACT:
            return self._mark(func(*args, **kwargs), kind)
        mask = _arg(args, kwargs, 1, "mask")
        if self.get(mask) == DATA:  # x.masked_fill(x < 0, 0): a hand-written activation, the identity
            return self._mark(args[0] if op.inplace else args[0].clone(), ACT)
        if op.inplace:
            return self._mark(args[0].masked_fill_(mask, 0.0), ACT)
        return self._mark(args[0].masked_fill(mask, 0.0), ACT)

    def _setitem(self, op, func, args, kwargs, acts) -> Any:
        target, index, value = args
        if self.get(value) is None:
            value = 0.0  # a constant written into an activation: a shift
        elif self.get(target) is None:
            target.zero_()
        target[index] = value
        self.put(target, ACT)

    def _copy(self, op, func, args, kwargs, acts) -> Any:
        out = func(*args, **kwargs)
        return self._mark(out, ACT) if self.get(args[1]) is not None else out

    def _fill(self, op, func, args, kwargs, acts) -> Any:
        out = func(*args, **kwargs)
        self.put(out, None)
        return out

    def _const(self, op, func, args, kwargs, acts) -> Any:
        return func(*args, **kwargs)

    def _composite(self, op, func, args, kwargs, acts) -> Any:
        raise self.refuse(op, "pwmpr has no decomposition for it")

    # -- pwmp-attn: tangents of the real attention -----------------------------------------------------------------
    def _tangent(self, op: Op, func, args: tuple, kwargs: dict, values: list) -> Any:
        """An op on an attention's tangent logits or tangent weights (docs/method.md, "Attention: growing q and k")."""
        kinds = [v for _, v in values]
        tangent = next(t for t, v in values if v in (TANGENT_LOGITS, TANGENT_ATTENTION))
        kind, site = self.get(tangent), self._site[id(tangent)]
        rec = self.records[site]
        if op.kind is Kind.CONTRACT and kind == TANGENT_ATTENTION and ACT in kinds:
            operands = [a for a in (args[1:] if op.name == "einsum" else args) if isinstance(a, Tensor)]
            if op.name == "rmatmul":
                operands = operands[::-1]
            if operands[0] is not tangent:
                raise self.refuse(op, "it multiplies values by attention weights from the right")
            v = operands[1]
            return self._mark(rec.mix(rec.attention, v) + rec.mix(tangent, rec.v), ACT)
        if len(values) > 1:
            raise self.refuse(op, "it combines an attention's tangent with another activation")
        if op.kind is Kind.SOFTMAX and kind == TANGENT_LOGITS:
            out = _softmax_tangent(rec.attention, tangent, rec.dim)
            kind = TANGENT_ATTENTION
        elif op.kind is Kind.BINARY and op.name in ("add", "sub", "rsub"):
            out = tangent.clone()  # an additive term (a bias, a mask) has no tangent
        elif op.kind is Kind.MASKED_FILL:
            out = tangent.masked_fill(_arg(args, kwargs, 1, "mask"), 0.0)
        elif op.kind is Kind.SAME and op.name in _DROPOUTS:
            out = tangent
        elif op.kind in (Kind.MOVE, Kind.SAME, Kind.BINARY, Kind.REDUCE):
            out = func(*args, **kwargs)  # views, casts, a scale; an average of the weights (returned, not a path)
        elif op.kind is Kind.CONST:
            return func(*args, **kwargs)
        else:
            raise self.refuse(op, "pwmpr has no tangent stand-in for this op on attention scores")
        for t in tensors_in(out):
            self._site[id(t)] = site
        return self._mark(out, kind)

    def _embed(self, op, func, args, kwargs, acts) -> Any:
        """A lookup of input ids in a dense table ``E`` (vocabulary, features): the input's value times each
        feature's mean ``|E|`` over the vocabulary, a token drawn uniformly (docs/method.md, Language models)."""
        x = args[0]
        if self._kind(acts) != ACT or self.get(x) != ACT:
            raise self.refuse(op, "it looks up ids that are not the model's input")
        table = args[1] if len(args) > 1 else kwargs["weight"]
        return self._mark(x.unsqueeze(-1) * table.detach().abs().to(x.dtype).mean(0), ACT)

    # -- contractions ---------------------------------------------------------------------------------------------
    def _contract(self, op: Op, func, args: tuple, kwargs: dict) -> Any:
        if op.name == "linear" or op.name.startswith("conv"):
            x, w = args[0], _arg(args, kwargs, 1, "weight")
            vx, vw = self.get(x), self.get(w)
            if vx is None:
                return func(*_detached(args), **_detached(kwargs))  # no path from the input: a constant
            if vx != ACT:
                raise self.refuse(op, "it applies a weight to attention scores")
            if vw is not None and not isinstance(vw, WeightView):
                raise self.refuse(op, "its weight is computed from the input (a dynamic weight has no stand-in)")
            weight = w if vw is not None else w.detach().abs()
            if op.name == "linear":
                out = F.linear(x, weight)  # docs/method.md, Score: biases are not path edges
                unit_dim = -1
            else:
                rest = list(args[3:]) if len(args) > 3 else []
                extra = {k: v for k, v in kwargs.items() if k not in ("input", "weight", "bias")}
                out = func(x, weight, None, *rest, **extra)
                unit_dim = 1
            return self._weight_output(vw, self._mark(out, ACT), unit_dim)
        if op.name == "einsum":
            return self._einsum(op, func, args, kwargs)
        a, b = (args[1], args[0]) if op.name == "rmatmul" else (args[0], args[1])
        return self._product(op, [a, b], torch.matmul, matmul=True)

    def _product(self, op: Op, operands: list[Tensor], compute: Callable[..., Tensor], matmul: bool = False
                 ) -> Tensor:
        """A contraction of operands (activations, weights, constants, attention weights): see docs/method.md."""
        kinds = [self.get(t) for t in operands]
        acts = [k for k in kinds if k == ACT]
        if len(acts) >= 2:
            site = self.sites
            self.sites += 1
            if self.records is not None:  # pwmp-attn: the q-k product's tangent at the real batch
                rec = self.records[site]
                out = rec.logits(operands[0], rec.b) + rec.logits(rec.a, operands[1])
                self._site[id(out)] = site
                return self._mark(out, TANGENT_LOGITS)
            # q @ k^T: attention logits. Their value does not matter to the stand-in softmax (uniform over what a
            # mask leaves visible), so they are zeros here, and q and k carry no path mass (docs/method.md, Score).
            with torch.no_grad():
                out = torch.zeros_like(compute(*(t.detach() for t in operands)))
            return self._mark(out, LOGITS)
        if LOGITS in kinds:
            raise self.refuse(op, "it multiplies attention logits before their softmax")
        if not acts:
            if ATTENTION in kinds:
                return compute(*operands)
            return compute(*(t.detach() if isinstance(self.get(t), WeightView) else t for t in operands))
        if ATTENTION in kinds and kinds.index(ATTENTION) > kinds.index(ACT):
            raise self.refuse(op, "it multiplies values by attention weights from the right")
        factors = [t if k is not None else t.detach().abs() for t, k in zip(operands, kinds, strict=True)]
        out = self._mark(compute(*factors), ACT)
        views = [(i, k) for i, k in enumerate(kinds) if isinstance(k, WeightView)]
        if views and matmul:  # act @ W: units on the last dim, W's columns; W @ act: units on dim -2, W's rows
            i, view = views[0]
            out = self._weight_output(view, out, -1 if i == 1 else -2, columns=i == 1)
        return out

    def _einsum(self, op: Op, func, args: tuple, kwargs: dict) -> Tensor:
        equation = args[0]
        operands = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
        return self._product(op, operands, lambda *ops: torch.einsum(equation, *ops))

    def _weight_output(self, view: Any, out: Tensor, unit_dim: int, columns: bool = False) -> Tensor:
        """Hand the output of a use of a prunable weight to ``on_weight_output`` with the positions of the entries
        feeding each output unit, laid out ``[unit, ...]``."""
        if self.on_weight_output is None or not isinstance(view, WeightView):
            return out
        positions = view.positions
        if columns:
            positions = view.pos().transpose(-1, -2)
        out = self.on_weight_output(view.name, positions, out, unit_dim)
        self.put(out, ACT)
        return out


# -- argument helpers ---------------------------------------------------------------------------------------------


def _softmax_tangent(attention: Tensor, ds: Tensor, dim: int) -> Tensor:
    """``|J| dS`` for the absolute softmax Jacobian ``|J| = |diag(a) - a a^T|`` at the attention map ``a``:
    ``a (a . dS) + a (1 - 2 a) dS`` along ``dim`` (docs/method.md, "Attention: growing q and k")."""
    return attention * (attention * ds).sum(dim, keepdim=True) + attention * (1 - 2 * attention) * ds


def _arg(args: tuple, kwargs: dict, pos: int, name: str, default: Any = None) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[pos] if len(args) > pos else default


def _positive(weight: Tensor | None, n: int, like: Tensor) -> Tensor:
    """``|weight|``, or ones where a norm has no affine weight."""
    if weight is None:
        return torch.ones(n, dtype=like.dtype, device=like.device)
    return weight.abs().to(like.dtype)


def _inplace(op: Op, args: tuple, kwargs: dict) -> bool:
    if op.inplace or kwargs.get("inplace") is True:
        return True
    return op.name not in _DROPOUTS and len(args) > 1 and args[-1] is True


def _reduced(shape: tuple[int, ...], out: tuple[int, ...], args: tuple, kwargs: dict, op: Op) -> list[int]:
    """The dims a reduction ran over, from its ``dim`` argument (all dims when it has none)."""
    dim = kwargs.get("dim", kwargs.get("axis"))
    if dim is None:
        for a in args[1:3]:
            if isinstance(a, int) and not isinstance(a, bool) or isinstance(a, (tuple, list)) and a and all(
                    isinstance(d, int) for d in a):
                dim = a
                break
    if dim is None:
        return list(range(len(shape)))
    dims = [dim] if isinstance(dim, int) else list(dim)
    return sorted({d % len(shape) for d in dims})


def _first_tensor(out: Any) -> Tensor:
    return tensors_in(out)[0]


def _detached(x: Any) -> Any:
    if isinstance(x, Tensor):
        return x.detach()
    if isinstance(x, dict):
        return {k: _detached(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(_detached(v) for v in x)
    return x
