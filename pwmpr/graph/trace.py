"""Reading a model's real compute graph (torch.fx, shapes from one recorded forward pass) into its unit graph.

Each node of the traced graph is interpreted by what it does to units: a prunable Conv/Linear is a link, a residual
add (or a ``phew_stages`` block) a merge, unit-preserving ops keep their group, a flatten into a Linear an expansion.
An op the walks cannot follow raises a PwmprError naming it.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from pwmpr.errors import PwmprError
from pwmpr.graph.units import STAGES_HOOK, Group, Link, UnitGraph
from pwmpr.probe import device_of, float_dtype_of, training_mode


@dataclass(frozen=True)
class _Units:
    """A traced tensor whose dim ``dim`` holds the units of ``group``, laid out as ``outer x n x inner``."""

    group: int
    dim: int
    outer: int = 1
    inner: int = 1


_CONST = object()  # a value that carries no units: parameters, shapes, Python numbers

_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Hardswish, nn.Mish, nn.Sigmoid, nn.Tanh,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity,
)  # fmt: skip
_CHANNEL_MODULES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_ELEMENTWISE_FUNCS = {
    torch.relu, F.relu, F.relu6, F.gelu, F.silu, F.leaky_relu, F.hardswish, torch.sigmoid, torch.tanh, F.dropout,
    torch.clone,
}  # fmt: skip
_ELEMENTWISE_METHODS = {
    "relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "float", "double", "half", "to", "type_as", "detach",
}  # fmt: skip
_CHANNEL_FUNCS = {
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool2d,
}  # fmt: skip
_ADD = {operator.add, operator.iadd, torch.add, "add", "add_", "__add__", "__iadd__"}
_SCALE = {operator.mul, operator.imul, operator.truediv, operator.itruediv, torch.mul, torch.div}
_SCALE_METHODS = {"mul", "mul_", "div", "div_"}
_DIVIDE = {operator.truediv, operator.itruediv, torch.div, "div", "div_"}
_SHAPE_METHODS = {"size", "dim", "numel"}


class _ShapeRecorder(fx.Interpreter):
    """Runs the traced graph once and stores each tensor-valued node's shape in ``node.meta["shape"]``."""

    def run_node(self, n: fx.Node) -> object:
        result = super().run_node(n)
        if isinstance(result, Tensor):
            n.meta["shape"] = tuple(result.shape)
        return result


class _Tracer(fx.Tracer):
    """fx tracer that keeps modules declaring ``phew_stages`` whole: the graph builder expands them."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return _stages(m) is not None or super().is_leaf_module(m, module_qualified_name)


def _stages(m: nn.Module) -> tuple[tuple[str, ...], ...] | None:
    """The ``phew_stages`` a module declares, or None."""
    stages = getattr(m, STAGES_HOOK, None)
    return None if stages is None else tuple(tuple(stage) for stage in stages)


def build_unit_graph(model: nn.Module, input_shape: Sequence[int]) -> UnitGraph:
    """Trace ``model`` on inputs of ``input_shape`` (batch excluded) into its unit graph.

    The model is not changed: shapes are propagated in eval mode under ``no_grad`` and every module's
    training flag is restored.

    Raises:
        PwmprError: the model cannot be traced, or uses an op the walks cannot follow (the message names it).
    """
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except (fx.proxy.TraceError, TypeError, NotImplementedError) as exc:  # data-dependent Python in forward()
        raise PwmprError(f"PHEW cannot trace the model with torch.fx: {type(exc).__name__}: {exc}") from exc
    gm = fx.GraphModule(tracer.root, graph)
    with training_mode(model, False), torch.no_grad():
        _ShapeRecorder(gm).run(torch.zeros((1, *input_shape), device=device_of(model), dtype=float_dtype_of(model)))
    return _GraphBuilder(model, gm).build()


class _GraphBuilder:
    """Interprets the traced fx graph node by node into groups and links."""

    def __init__(self, model: nn.Module, gm: fx.GraphModule) -> None:
        self.modules = dict(model.named_modules())
        self.gm = gm
        self.groups: list[Group] = []
        self.links: list[Link] = []
        self.env: dict[fx.Node, object] = {}

    # -- graph construction -------------------------------------------------------------------------------------
    def build(self) -> UnitGraph:
        output = None
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                if self.groups:
                    raise PwmprError(f"PHEW walks need a model with one input, found a second one ({node.name})")
                shape = self._shape(node)
                self.groups.append(Group(n=shape[1], kind="input", name=node.name))
                self.env[node] = _Units(0, 1)
            elif node.op == "get_attr":
                self.env[node] = _CONST
            elif node.op == "output":
                out = self.env.get(node.args[0]) if isinstance(node.args[0], fx.Node) else None
                if not isinstance(out, _Units) or out.outer != 1 or out.inner != 1:
                    raise PwmprError("PHEW walks need a model that returns one tensor of class scores")
                if out.dim != len(self._shape(node.args[0])) - 1:
                    raise PwmprError("PHEW walks need the class scores on the last dimension of the output")
                output = out.group
            else:
                self.env[node] = self._visit(node)
        if output is None or not self.groups:
            raise PwmprError("PHEW walks found no input-to-output path in the model")
        self._drop_dead_ends(output)
        return UnitGraph(self.groups, self.links, output)

    def _drop_dead_ends(self, output: int) -> None:
        """Forget consumers that cannot lead to the output, so walks never get stuck in them."""
        reaches = [False] * len(self.groups)
        reaches[output] = True
        for g in reversed(range(len(self.groups))):
            group = self.groups[g]
            group.consumers = [
                (kind, idx) for kind, idx in group.consumers if reaches[self.links[idx].dst if kind == "link" else idx]
            ]
            reaches[g] = reaches[g] or bool(group.consumers)
        if not reaches[0]:
            raise PwmprError("PHEW walks found no input-to-output path in the model")

    def _new_group(self, n: int, kind: str, name: str, link: int | None = None, operands=()) -> int:
        self.groups.append(Group(n=n, kind=kind, name=name, link=link, operands=list(operands)))
        return len(self.groups) - 1

    def _add_link(self, param: str, src: int, weight: Tensor, outer: int, inner: int, name: str) -> int:
        n_dst, n_src = weight.shape[0], self.groups[src].n
        w = weight.detach().abs().float().cpu()
        link = Link(param, src, -1, torch.empty(n_dst, n_src, outer * inner), tuple(weight.shape), outer, inner)
        link.weight = link.cells(w).contiguous()
        self.links.append(link)
        link = len(self.links) - 1
        dst = self._new_group(n_dst, "layer", name, link=link)
        self.links[link].dst = dst
        self.groups[src].consumers.append(("link", link))
        return dst

    def _merge(self, values: Sequence[_Units], node: fx.Node, name: str | None = None) -> int:
        groups = list(dict.fromkeys(v.group for v in values))
        if len(groups) == 1:
            return groups[0]
        n = {self.groups[g].n for g in groups}
        if len(n) != 1 or any(v.outer != 1 or v.inner != 1 for v in values):
            raise PwmprError(f"PHEW cannot follow {self._describe(node)}: it joins tensors of different units")
        merged = self._new_group(n.pop(), "merge", name or node.name, operands=groups)
        for g in groups:
            self.groups[g].consumers.append(("merge", merged))
        return merged

    # -- node interpretation ------------------------------------------------------------------------------------
    def _visit(self, node: fx.Node) -> object:
        inputs = [self.env[n] for n in node.all_input_nodes]
        units = [v for v in inputs if isinstance(v, _Units)]
        if not units:
            return _CONST  # constants (parameters, shapes) carry no units, whatever is done to them
        if node.op == "call_module":
            return self._visit_module(node, self.modules[node.target])
        target = node.target
        x = self._arg(node, 0)
        if target is operator.getitem:
            return self._getitem(node, x)
        if target is torch.cat:
            return self._cat(node)
        if target is getattr or target in _SHAPE_METHODS:
            return _CONST
        if target in _ADD:
            values = [self._arg(node, i) for i in range(2)]
            unit_values = [v for v in values if isinstance(v, _Units)]
            return self._aligned(node, unit_values, self._merge(unit_values, node))
        if target in _SCALE or target in _SCALE_METHODS:
            if len(units) != 1 or (target in _DIVIDE and not isinstance(x, _Units)):
                raise PwmprError(f"PHEW cannot follow {self._describe(node)}: only scaling by a constant is linear")
            return self._aligned(node, units, units[0].group)
        if not isinstance(x, _Units):
            raise PwmprError(f"PHEW cannot follow {self._describe(node)}")
        if target in _ELEMENTWISE_FUNCS or target in _ELEMENTWISE_METHODS:
            return x
        if target in _CHANNEL_FUNCS:
            return self._channel_op(node, x)
        if target in (torch.flatten, "flatten"):
            start = self._arg(node, 1, "start_dim", 0)
            end = self._arg(node, 2, "end_dim", -1)
            return self._flatten(node, x, start, end)
        if target in (torch.transpose, "transpose"):
            d0, d1 = (self._norm_dim(self._arg(node, i, name), node.args[0]) for i, name in ((1, "dim0"), (2, "dim1")))
            return _Units(x.group, {d0: d1, d1: d0}.get(x.dim, x.dim), x.outer, x.inner)
        if target in (torch.permute, "permute"):
            dims = node.args[1] if len(node.args) == 2 and isinstance(node.args[1], (tuple, list)) else node.args[1:]
            dims = [self._norm_dim(d, node.args[0]) for d in dims]
            return _Units(x.group, dims.index(x.dim), x.outer, x.inner)
        if target in ("expand", "expand_as"):
            shift = len(self._shape(node)) - len(self._shape(node.args[0]))
            return _Units(x.group, x.dim + shift, x.outer, x.inner)
        if target in (torch.mean, torch.sum, "mean", "sum", "amax"):
            return self._reduce(node, x)
        if target in (torch.reshape, "reshape", "view"):
            return self._reshape(node, x)
        raise PwmprError(f"PHEW cannot follow {self._describe(node)}")

    def _visit_module(self, node: fx.Node, m: nn.Module) -> object:
        x = self._arg(node, 0)
        if not isinstance(x, _Units) or len(node.all_input_nodes) != 1:
            raise PwmprError(f"PHEW cannot follow {self._describe(node)}")
        ndim = len(self._shape(node.args[0]))
        stages = _stages(m)
        if stages is not None:
            return self._staged(node, m, stages, x, ndim)
        if isinstance(m, _CONVS):
            if m.groups != 1:
                raise PwmprError(f"PHEW cannot follow {self._describe(node)}: grouped convolutions are not supported")
            if x.dim != 1 or x.outer != 1 or x.inner != 1 or self.groups[x.group].n != m.in_channels:
                raise PwmprError(f"PHEW needs channels on dim 1 at {self._describe(node)}")
            k = math.prod(m.kernel_size)
            return _Units(self._add_link(f"{node.target}.weight", x.group, m.weight, 1, k, node.name), 1)
        if isinstance(m, nn.Linear):
            return _Units(self._linear(node, m, node.target, x, node.name), x.dim)
        if isinstance(m, _ELEMENTWISE_MODULES):
            return x
        if isinstance(m, _CHANNEL_MODULES):
            return self._channel_op(node, x)
        if isinstance(m, nn.LayerNorm):
            if x.dim != ndim - 1 or len(m.normalized_shape) != 1:
                raise PwmprError(f"PHEW needs LayerNorm over the unit dimension at {self._describe(node)}")
            return x
        if isinstance(m, nn.Flatten):
            return self._flatten(node, x, m.start_dim, m.end_dim)
        raise PwmprError(f"PHEW cannot follow {self._describe(node)}")

    def _staged(self, node: fx.Node, m: nn.Module, stages: Sequence[Sequence[str]], x: _Units, ndim: int) -> _Units:
        """A leaf declaring ``phew_stages``: each stage's Linear children link its input to groups that merge."""
        if x.dim != ndim - 1 or x.outer != 1 or x.inner != 1:
            raise PwmprError(f"PHEW needs features on the last dimension at {self._describe(node)}")
        for i, stage in enumerate(stages):
            if not stage or not all(isinstance(getattr(m, p, None), nn.Linear) for p in stage):
                raise PwmprError(f"PHEW cannot follow {self._describe(node)}: {STAGES_HOOK} stage {stage!r} must "
                                 "name Linear children")
            single_last = i == len(stages) - 1 and len(stage) == 1
            groups = [self._linear(node, getattr(m, p), f"{node.target}.{p}", x,
                                   node.name if single_last else f"{node.name}.{p}") for p in stage]
            x = _Units(self._merge([_Units(g, x.dim) for g in groups], node, name=f"{node.name}.{''.join(stage)}"),
                       x.dim)
        return x

    def _linear(self, node: fx.Node, m: nn.Module, qualname: str, x: _Units, name: str) -> int:
        ndim = len(self._shape(node.args[0]))
        if not isinstance(m, nn.Linear) or x.dim != ndim - 1:
            raise PwmprError(f"PHEW needs features on the last dimension at {self._describe(node)}")
        if x.outer * self.groups[x.group].n * x.inner != m.in_features:
            raise PwmprError(f"PHEW lost track of the units feeding {self._describe(node)}")
        return self._add_link(f"{qualname}.weight", x.group, m.weight, x.outer, x.inner, name)

    def _channel_op(self, node: fx.Node, x: _Units) -> _Units:
        if x.dim != 1:
            raise PwmprError(f"PHEW needs channels on dim 1 at {self._describe(node)}")
        return x

    def _flatten(self, node: fx.Node, x: _Units, start: int, end: int) -> _Units:
        shape = self._shape(node.args[0])
        start, end = self._norm_dim(start, node.args[0]), self._norm_dim(end, node.args[0])
        if x.dim < start:
            return x
        if x.dim > end:
            return _Units(x.group, x.dim - (end - start), x.outer, x.inner)
        outer = x.outer * math.prod(shape[start : x.dim])
        inner = x.inner * math.prod(shape[x.dim + 1 : end + 1])
        return _Units(x.group, start, outer, inner)

    def _reshape(self, node: fx.Node, x: _Units) -> _Units:
        """A reshape that flattens a range of dims (a ``view(n, -1)``, say); other reshapes are refused."""
        s, t = self._shape(node.args[0]), self._shape(node)
        if tuple(s) == tuple(t):
            return x
        for start in range(len(s)):
            for end in range(start + 1, len(s)):
                if (*s[:start], math.prod(s[start : end + 1]), *s[end + 1 :]) == tuple(t):
                    return self._flatten(node, x, start, end)
        raise PwmprError(f"PHEW cannot follow {self._describe(node)}: only reshapes that flatten dims are supported")

    def _reduce(self, node: fx.Node, x: _Units) -> _Units:
        dims = self._arg(node, 1, "dim", None)
        keepdim = self._arg(node, 2, "keepdim", False)
        if dims is None:
            raise PwmprError(f"PHEW cannot follow {self._describe(node)}: it reduces over the units")
        dims = [self._norm_dim(d, node.args[0]) for d in (dims if isinstance(dims, (tuple, list)) else [dims])]
        if x.dim in dims:
            raise PwmprError(f"PHEW cannot follow {self._describe(node)}: it reduces over the units")
        return x if keepdim else _Units(x.group, x.dim - sum(d < x.dim for d in dims), x.outer, x.inner)

    def _getitem(self, node: fx.Node, x: object) -> object:
        idx = node.args[1]
        if not isinstance(x, _Units):
            raise PwmprError(f"PHEW cannot follow {self._describe(node)}: it indexes with a unit tensor")
        idx = idx if isinstance(idx, tuple) else (idx,)
        if any(isinstance(i, fx.Node) for i in idx):
            raise PwmprError(f"PHEW cannot follow {self._describe(node)}: tensor indexing")
        ndim = len(self._shape(node.args[0]))
        n_used = sum(i is not None and i is not Ellipsis for i in idx)
        dim_in = dim_out = 0
        for i in idx:
            if i is Ellipsis:
                skip = ndim - n_used
                if dim_in <= x.dim < dim_in + skip:
                    return _Units(x.group, dim_out + x.dim - dim_in, x.outer, x.inner)
                dim_in, dim_out = dim_in + skip, dim_out + skip
            elif i is None:
                dim_out += 1
            else:
                if dim_in == x.dim:
                    if i != slice(None):
                        raise PwmprError(f"PHEW cannot follow {self._describe(node)}: it selects some of the units")
                    return _Units(x.group, dim_out, x.outer, x.inner)
                dim_out += 0 if isinstance(i, int) else 1
                dim_in += 1
        return _Units(x.group, dim_out + x.dim - dim_in, x.outer, x.inner)

    def _cat(self, node: fx.Node) -> _Units:
        tensors = self._arg(node, 0, "tensors")
        dim = self._norm_dim(self._arg(node, 1, "dim", 0), node)
        values = [self.env[t] for t in tensors if isinstance(t, fx.Node)]
        unit_values = [v for v in values if isinstance(v, _Units)]
        if any(v.dim == dim for v in unit_values):
            raise PwmprError(f"PHEW cannot follow {self._describe(node)}: it concatenates along the units")
        return self._aligned(node, unit_values, self._merge(unit_values, node))

    def _aligned(self, node: fx.Node, values: Sequence[_Units], group: int) -> _Units:
        """The result of a broadcasting op on ``values``: unit dims must line up counted from the end."""
        ndim_out = len(self._shape(node))
        from_end = {len(self._shape(n)) - self.env[n].dim for n in node.all_input_nodes if self.env[n] in values}
        if len(from_end) != 1:
            raise PwmprError(f"PHEW cannot follow {self._describe(node)}: its inputs have units on different dims")
        v = values[0]
        return _Units(group, ndim_out - from_end.pop(), v.outer, v.inner)

    # -- helpers ------------------------------------------------------------------------------------------------
    def _arg(self, node: fx.Node, pos: int, name: str | None = None, default: object = None) -> object:
        raw = node.args[pos] if pos < len(node.args) else node.kwargs.get(name, default)
        return self.env[raw] if isinstance(raw, fx.Node) else raw

    def _shape(self, node: fx.Node) -> tuple[int, ...]:
        if "shape" not in node.meta:
            raise PwmprError(f"PHEW cannot follow {self._describe(node)}: it does not produce one tensor")
        return node.meta["shape"]

    def _norm_dim(self, d: int, node: fx.Node) -> int:
        ndim = len(self._shape(node))
        return d + ndim if d < 0 else d

    def _describe(self, node: fx.Node) -> str:
        if node.op == "call_module":
            what = f"module {type(self.modules[node.target]).__name__} ({node.target})"
        elif node.op == "call_method":
            what = f"method .{node.target}()"
        else:
            what = f"function {getattr(node.target, '__name__', node.target)}()"
        return f"op {what} at node {node.name!r}"
