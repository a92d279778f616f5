"""Running a model's real forward while watching every torch call: the base of the tracer, scoring net and FLOPs.

:class:`WatchMode` (a ``TorchFunctionMode``) keeps a value per tracked tensor and tracks views of the prunable
weights (:class:`WeightView`); subclasses handle each op of :mod:`pwmpr.graph.ops`.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from pwmpr.errors import PwmprError
from pwmpr.graph.arguments import positional
from pwmpr.graph.ops import CONCATS, Kind, Op, op_of
from pwmpr.masks import prunable


@dataclass(frozen=True)
class WeightView:
    """A tensor holding entries of the prunable parameter ``name``: ``positions`` (None: all, in order) gives the flat
    index into the parameter of each entry, shaped like the tensor."""

    name: str
    numel: int
    shape: tuple[int, ...]
    positions: Tensor | None = None

    def pos(self) -> Tensor:
        """The positions as a tensor (materialized for the identity)."""
        if self.positions is not None:
            return self.positions
        return torch.arange(self.numel).view(self.shape)


def move_args(op: Op, args: Any, kwargs: dict, shadow: Callable[[Tensor], Tensor | None],
              fill: Callable[[Tensor], Tensor]) -> tuple[Any, dict]:
    """``args`` and ``kwargs`` with every tracked tensor replaced by its shadow. In the list a concatenation joins
    an untracked tensor is replaced by ``fill(t)``; other untracked tensors (indices, masks) are moved to the CPU."""

    def one(a: Any, in_list: bool) -> Any:
        if not isinstance(a, Tensor):
            return a
        s = shadow(a)
        if s is not None:
            return s
        return fill(a) if in_list else a.detach().cpu()

    def walk(a: Any, in_list: bool = False) -> Any:
        if isinstance(a, (list, tuple)):
            return type(a)(walk(t, in_list) for t in a)
        return one(a, in_list)

    concat = op.name in CONCATS
    args = tuple(walk(a, concat and i == 0) for i, a in enumerate(args))
    return args, {k: walk(v, concat and k == "tensors") for k, v in kwargs.items()}


def tensors_in(args: Any, kwargs: dict | None = None) -> list[Tensor]:
    """Every tensor in ``args`` and ``kwargs`` (nested lists and tuples included)."""
    flat, _ = tree_flatten((args, kwargs or {}))
    return [a for a in flat if isinstance(a, Tensor)]


class WatchMode(TorchFunctionMode):
    """Sees every torch call of a forward; keeps a value per tracked tensor and the views of the prunable weights.

    Subclasses implement :meth:`handle`; ``where`` names the module whose forward is running, for messages.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._values: dict[int, tuple[weakref.ref, Any]] = {}
        self._stack: list[str] = []
        params = dict(model.named_parameters())
        self.prunable = prunable(model)
        for name in self.prunable:
            p = params[name]
            self.put(p, WeightView(name, p.numel(), tuple(p.shape)))

    # -- the value store ------------------------------------------------------------------------------------------
    def get(self, t: object) -> Any:
        """The value of tensor ``t``, or None when it is not tracked."""
        if not isinstance(t, Tensor):
            return None
        entry = self._values.get(id(t))
        if entry is None or entry[0]() is not t:
            return None
        return entry[1]

    def put(self, t: Tensor, value: Any) -> None:
        """Track ``t`` with ``value`` (None: stop tracking it)."""
        if value is None:
            self._values.pop(id(t), None)
        else:
            self._values[id(t)] = (weakref.ref(t), value)

    def tracked(self, args: Any, kwargs: dict | None = None) -> list[tuple[Tensor, Any]]:
        """The tracked tensors among ``args`` and ``kwargs`` with their values, in order."""
        return [(t, v) for t in tensors_in(args, kwargs) if (v := self.get(t)) is not None]

    # -- messages ------------------------------------------------------------------------------------------------
    def where(self) -> str:
        """The module whose forward is running, as ``module <name> (<type>)``."""
        return f"module {self._stack[-1]}" if self._stack else "the model's forward"

    def refuse(self, op: Op | str, reason: str) -> PwmprError:
        """The error for an op that cannot be followed, naming the module, the op and why."""
        name = op.name if isinstance(op, Op) else op
        return PwmprError(f"{self.where()} calls {name}() in its forward: {reason}")

    @contextlib.contextmanager
    def watching(self, model: nn.Module, inside: bool = False) -> Iterator[WatchMode]:
        """Within the block the mode is active and knows which module of ``model`` runs (forward hooks);
        ``inside``: the block runs within ``model``'s own forward already."""
        names = {m: f"{n or type(m).__name__} ({type(m).__name__})" for n, m in model.named_modules()}
        if inside:
            self._stack.append(names[model])

        def enter(module, _args):
            self._stack.append(names.get(module, type(module).__name__))

        def leave(module, _args, _out):
            if self._stack:
                self._stack.pop()

        handles = [h for m in model.modules()
                   for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave, always_call=True))]
        try:
            with self:
                yield self
        finally:
            for h in handles:
                h.remove()
            self._stack.clear()

    # -- dispatch ------------------------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.tracked(args, kwargs):
            return func(*args, **kwargs)
        args, kwargs = positional(func, args, kwargs)  # F.conv2d(input=x, weight=w) as F.conv2d(x, w)
        op = op_of(func)
        if op.kind is Kind.COMPOSITE and op.name in DECOMPOSITIONS:
            with self:
                result = DECOMPOSITIONS[op.name](*args, **kwargs)
                return args[0].copy_(result) if op.inplace else result  # x.addcmul_(...): the result into x
        return self.handle(op, func, args, kwargs)

    def handle(self, op: Op, func: Callable, args: tuple, kwargs: dict) -> Any:
        """Run (or stand in for) ``func`` on arguments of which at least one is tracked; record the result."""
        raise NotImplementedError

    # -- weights -------------------------------------------------------------------------------------------------
    def weight_result(self, op: Op, func: Callable, args: tuple, kwargs: dict, out: Any,
                      views: Sequence[WeightView]) -> bool:
        """Track ``out`` as a view of the weight in ``views`` where ``op`` keeps entries apart; True when it did."""
        if op.kind is Kind.MOVE:
            if len({v.name for v in views}) != 1:
                raise self.refuse(op, "it mixes entries of two different weights")
            pos_args, pos_kwargs = move_args(op, args, kwargs, self._pos_of, _no_entries)
            moved = func(*pos_args, **pos_kwargs)
            outs, _ = tree_flatten(out)
            shadows, _ = tree_flatten(moved)
            for o, s in zip(outs, shadows, strict=False):
                if isinstance(o, Tensor) and isinstance(s, Tensor):
                    if bool((s < 0).any()):
                        raise self.refuse(op, "it joins a prunable weight with constants")
                    self.put(o, WeightView(views[0].name, views[0].numel, tuple(o.shape), s))
            return True
        if op.kind in (Kind.SAME, Kind.BINARY) and len(views) == 1 and isinstance(out, Tensor):
            v = views[0]
            pos = v.positions
            if tuple(out.shape) != v.shape:
                pos = v.pos().expand(out.shape) if _broadcastable(v.shape, tuple(out.shape)) else None
                if pos is None:
                    return False
            self.put(out, WeightView(v.name, v.numel, tuple(out.shape), pos))
            return True
        return False

    def _pos_of(self, t: Tensor) -> Tensor | None:
        v = self.get(t)
        return v.pos() if isinstance(v, WeightView) else None


def _no_entries(t: Tensor) -> Tensor:
    return torch.full(t.shape, -1, dtype=torch.long)


def _broadcastable(shape: tuple[int, ...], out: tuple[int, ...]) -> bool:
    try:
        return tuple(torch.broadcast_shapes(shape, out)) == out
    except RuntimeError:
        return False


# -- decompositions: composite functions run as the standard ops they stand for -----------------------------------


def _mha_forward(query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias, bias_k, bias_v,
                 add_zero_attn, dropout_p, out_proj_weight, out_proj_bias, training=True, key_padding_mask=None,
                 need_weights=True, attn_mask=None, use_separate_proj_weight=False, q_proj_weight=None,
                 k_proj_weight=None, v_proj_weight=None, static_k=None, static_v=None, average_attn_weights=True,
                 is_causal=False):
    """``F.multi_head_attention_forward`` for sequence-first ``(L, N, E)`` inputs, written with linear, reshapes and
    an explicit softmax attention, so the watch modes see the q, k and v projections and the attention itself."""
    if bias_k is not None or bias_v is not None or add_zero_attn or static_k is not None or static_v is not None:
        raise PwmprError("nn.MultiheadAttention with add_bias_kv, add_zero_attn or static keys is not supported")
    if query.dim() != 3:
        raise PwmprError("nn.MultiheadAttention is supported for batched (3-D) inputs")
    tgt_len, bsz, embed_dim = query.shape
    src_len = key.shape[0]
    head_dim = embed_dim // num_heads
    if use_separate_proj_weight:
        wq, wk, wv = q_proj_weight, k_proj_weight, v_proj_weight
    else:
        wq, wk, wv = in_proj_weight.chunk(3)
    bq = bk = bv = None
    if in_proj_bias is not None:
        bq, bk, bv = in_proj_bias.chunk(3)
    if query is key and key is value and not use_separate_proj_weight:
        proj = F.linear(query, in_proj_weight, in_proj_bias)
        q, k, v = proj.chunk(3, dim=-1)
    else:
        q, k, v = F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)
    q = q.reshape(tgt_len, bsz * num_heads, head_dim).transpose(0, 1)
    k = k.reshape(src_len, bsz * num_heads, head_dim).transpose(0, 1)
    v = v.reshape(src_len, bsz * num_heads, head_dim).transpose(0, 1)
    logits = torch.bmm(q, k.transpose(1, 2)) * (1.0 / math.sqrt(head_dim))
    if is_causal and attn_mask is None:
        attn_mask = torch.ones(tgt_len, src_len, dtype=torch.bool, device=query.device).triu(1)
    if attn_mask is not None:
        mask = attn_mask if attn_mask.dim() == 3 else attn_mask.unsqueeze(0)
        logits = logits.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
    if key_padding_mask is not None:
        pad = key_padding_mask.view(bsz, 1, 1, src_len).expand(-1, num_heads, -1, -1).reshape(bsz * num_heads, 1,
                                                                                            src_len)
        logits = logits.masked_fill(pad, float("-inf")) if pad.dtype == torch.bool else logits + pad
    attn = torch.softmax(logits, dim=-1)
    if dropout_p > 0.0 and training:
        attn = F.dropout(attn, p=dropout_p)
    out = torch.bmm(attn, v).transpose(0, 1).reshape(tgt_len * bsz, embed_dim)
    out = F.linear(out, out_proj_weight, out_proj_bias).view(tgt_len, bsz, embed_dim)
    if not need_weights:
        return out, None
    weights = attn.view(bsz, num_heads, tgt_len, src_len)
    return out, (weights.mean(dim=1) if average_attn_weights else weights)


def _glu(input, dim=-1):
    """``F.glu`` as the gate it is: ``a * sigmoid(b)`` of the two halves."""
    a, b = input.chunk(2, dim=dim)
    return a * torch.sigmoid(b)


def _add_scaled(combine: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    """``torch.addcmul`` (``combine`` a product) or ``addcdiv`` (a quotient) as the sum it is:
    ``input + value * combine(tensor1, tensor2)`` (ResMLP's affine)."""

    def decomposed(input, *rest, value=1, out=None):
        value, t1, t2 = rest if len(rest) == 3 else (value, *rest)  # (input, value, t1, t2): the deprecated order
        result = input + value * combine(t1, t2)
        return out.copy_(result) if out is not None else result

    return decomposed


def _add_product(first: str, second: str) -> Callable[..., Any]:
    """``torch.addmm`` or ``baddbmm`` as the sum it is: ``beta * input + alpha * (a @ b)`` (GPT-2's ``Conv1D``
    layers, a position bias added to attention logits as BLOOM's ALiBi); ``beta`` 0 reads no input. Takes every
    spelling torch does: the matrices by position or by name, and the deprecated leading ``beta`` (and ``alpha``)
    numbers."""

    def decomposed(*args, beta=None, alpha=None, out=None, **named):
        tensors = [a for a in args if isinstance(a, Tensor)]
        numbers = [a for a in args if not isinstance(a, Tensor)]
        slots = ["input", first, second]
        given = {k: named.pop(k) for k in slots if k in named}
        values = {**dict(zip([k for k in slots if k not in given], tensors, strict=False)), **given}
        if named or len(values) != 3 or len(tensors) + len(given) != 3 or len(numbers) > 2:
            raise PwmprError(f"pwmpr cannot read this call of {'addmm' if first == 'mat1' else 'baddbmm'}: "
                             "pass input and the two matrices, with beta and alpha by name")
        old_beta, old_alpha = (list(numbers) + [None, None])[:2]  # the deprecated order: (beta, input, alpha, ...)
        beta = 1 if beta is None and old_beta is None else beta if beta is not None else old_beta
        alpha = 1 if alpha is None and old_alpha is None else alpha if alpha is not None else old_alpha
        result = torch.matmul(values[first], values[second])
        if alpha != 1:
            result = alpha * result
        if beta != 0:
            result = (values["input"] if beta == 1 else beta * values["input"]) + result
        return out.copy_(result) if out is not None else result

    return decomposed


#: Composite functions the watch modes run as their decomposition (by the name :func:`pwmpr.graph.ops.op_of` gives).
DECOMPOSITIONS: dict[str, Callable[..., Any]] = {"multi_head_attention_forward": _mha_forward, "glu": _glu,
                                                 "addcmul": _add_scaled(lambda a, b: a * b),
                                                 "addcdiv": _add_scaled(lambda a, b: a / b),
                                                 "addmm": _add_product("mat1", "mat2"),
                                                 "baddbmm": _add_product("batch1", "batch2")}


def detach_tree(out: Any) -> Any:
    """``out`` with every tensor detached (for shadows computed next to the real values)."""
    return tree_map(lambda t: t.detach() if isinstance(t, Tensor) else t, out)
