"""Cost and structure accounting beside the pipeline: training FLOPs (docs/method.md, Cost) and the tau-core.

Neither changes a model or a mask. FLOPs count the multiply-accumulates of every use of a prunable weight for one
example, dense and with only the present weights; the tau-core is the smallest set of hidden units, found greedily,
that carries a fraction tau of the path mass of the linear |W| network of
:func:`pwmpr.surrogate.linear_surrogate`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from pwmpr.errors import PwmprError
from pwmpr.graph.mode import WatchMode, WeightView
from pwmpr.graph.ops import Kind, Op
from pwmpr.masks import MaskSet, prunable
from pwmpr.probe import device_of, float_dtype_of, normalize_input_shape, run_forward, sum_outputs, training_mode
from pwmpr.surrogate import linear_surrogate, scoring_input, surrogate_forward

# Coverage is a ratio of float64 sums: a core that carries exactly tau of the mass must count as reaching tau.
_TAU_SLACK = 1e-12


# -- FLOPs ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerFlops:
    """Forward multiply-accumulates of one prunable weight for one example."""

    sparse: int  # present weights x output positions
    dense: int  # all weights x output positions
    positions: int  # times each entry is used (output positions of a conv, tokens of a linear), summed over uses


@dataclass(frozen=True)
class FlopCount:
    """Forward cost of the prunable weights' uses for one example, sparse (present weights only) and dense.

    Convention: one multiply-accumulate counts as 1 (``nnz(W) * H_out * W_out``; docs/method.md, Cost); double
    every figure for the "2 FLOPs per MAC" convention. The ratio, which is what cost accounting normalises by,
    is the same under both. Norms, activations, pooling, residual additions and the products of two activations
    (attention's ``q @ k^T`` and ``@ v``) are not counted: they are not prunable.
    """

    sparse: int
    dense: int
    layers: dict[str, LayerFlops] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """sparse / dense: the fraction of dense forward cost this mask needs (0 for a model with no weights)."""
        return self.sparse / self.dense if self.dense else 0.0

    @property
    def training_step(self) -> int:
        """Sparse training cost of one example: forward + backward ~ 3x forward (docs/method.md, Cost; RigL)."""
        return 3 * self.sparse

    @property
    def dense_training_step(self) -> int:
        """Dense training cost of one example (3x the dense forward)."""
        return 3 * self.dense


class _WeightUses(WatchMode):
    """Records every use of a prunable weight in a contraction: ``(name, entries used, MACs per entry)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.uses: list[tuple[str, Tensor | None, int, float]] = []

    def handle(self, op: Op, func, args: tuple, kwargs: dict):
        out = func(*args, **kwargs)
        views = [(t, v) for t, v in self.tracked(args, kwargs) if isinstance(v, WeightView)]
        if not views:
            return out
        if op.kind is Kind.CONTRACT and isinstance(out, Tensor):
            t, view = views[0]
            self.uses.append((view.name, view.positions, t.numel(), _macs(op, args, t, out) / max(1, t.numel())))
        else:
            self.weight_result(op, func, args, kwargs, out, [v for _, v in views])
        return out


def _macs(op: Op, args: tuple, weight: Tensor, out: Tensor) -> float:
    """Dense multiply-accumulates of a contraction with ``weight`` (one example)."""
    if op.name == "linear" or op.name.startswith("conv"):
        return out.numel() * weight.numel() / max(1, weight.shape[0])
    if op.name == "einsum":
        lhs = args[0].replace(" ", "").split("->")[0].split(",")
        operands = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
        sizes = {c: n for labels, t in zip(lhs, operands, strict=False) for c, n in zip(labels, t.shape, strict=False)}
        return float(math.prod(sizes.values()))
    a, b = (args[1], args[0]) if op.name == "rmatmul" else (args[0], args[1])
    return out.numel() * a.shape[-1]


@torch.no_grad()
def training_flops(model: nn.Module, masks: Mapping[str, Tensor] | None, input_shape: Sequence[int]) -> FlopCount:
    """Forward multiply-accumulates of the uses of prunable weights in ``model``, dense and present weights only.

    A use of a weight costs ``present entries used * times each is used``: ``nnz(mask) * output positions`` for a
    Conv (any groups), ``nnz(mask) * tokens`` for a Linear, the same for a ``matmul`` or ``einsum`` with a weight.
    Uses are read from one forward pass on an all-zeros example (eval mode); a weight used twice is counted twice.

    Args:
        model: the network (parameters, buffers and mode left unchanged; run once in eval mode).
        masks: ``{weight name: bool mask}``; weights without a mask count as dense. None: all dense.
        input_shape: one input without the batch dimension.

    Returns:
        A :class:`FlopCount` for one example; ``training_step`` gives the 3x-forward training estimate.

    Raises:
        PwmprError: unknown mask names or wrong mask shapes, or an ``input_shape`` the model cannot take.
    """
    masks = MaskSet.checked(model, masks)
    shape = normalize_input_shape(input_shape)
    mode = _WeightUses(model)
    with training_mode(model, False), mode.watching(model):
        run_forward(model, torch.zeros((1, *shape), device=device_of(model), dtype=float_dtype_of(model)))
    sparse = dict.fromkeys(prunable(model), 0.0)
    dense = dict.fromkeys(sparse, 0.0)
    positions = dict.fromkeys(sparse, 0.0)
    for name, entries, n_used, per_entry in mode.uses:
        mask = masks[name].reshape(-1) if name in masks else None
        if mask is None:
            present = n_used
        elif entries is None:
            present = int(mask.sum())
        else:
            present = int(mask[entries.reshape(-1).to(mask.device)].sum())
        sparse[name] += present * per_entry
        dense[name] += n_used * per_entry
        positions[name] += per_entry
    layers = {n: LayerFlops(round(sparse[n]), round(dense[n]), round(positions[n])) for n in sparse}
    return FlopCount(sum(f.sparse for f in layers.values()), sum(f.dense for f in layers.values()), layers)


# -- tau-core ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TauCore:
    """The greedy tau-core of a masked network (see :func:`tau_core`).

    ``units`` are ``(weight name, output channel or row)`` pairs in the order they were removed; ``coverage[k]`` is the
    fraction of the path mass R removed after the first k+1 of them. A smaller ``ratio`` means the paths are
    funnelled through fewer units (a bottleneck).
    """

    tau: float
    size: int  # units in the core
    n_hidden: int  # hidden units in the network (rows of every prunable weight that does not produce the outputs)
    ratio: float  # size / n_hidden
    coverage: list[float]
    units: list[tuple[str, int]]
    total: float  # R, the path mass of the whole network
    reached: bool  # False when the mass left runs through no hidden unit, so coverage stops below tau

    def per_layer(self) -> dict[str, int]:
        """Core units per layer (layers without any are left out)."""
        counts: dict[str, int] = {}
        for name, _ in self.units:
            counts[name] = counts.get(name, 0) + 1
        return counts


def _unit_rows(name: str, positions: Tensor | None, n_units: int, shape: Sequence[int]) -> Tensor:
    """The parameter row (output channel or feature) of each output unit of one use of weight ``name``."""
    if positions is None:
        return torch.arange(n_units)
    return positions.reshape(n_units, -1)[:, 0].cpu() // max(1, math.prod(shape[1:]))


def _output_weights(surrogate: nn.Module, x: Tensor) -> set[str]:
    """Names of the prunable weights that produce the outputs: reached from R without crossing another use."""
    outputs: dict[object, str] = {}

    def record(name: str, positions, out: Tensor, unit_dim: int) -> Tensor:
        if out.grad_fn is not None:
            outputs[out.grad_fn] = name
        return out

    with torch.enable_grad():
        total = sum_outputs(surrogate_forward(surrogate, x.detach().requires_grad_(True), record))
    found: set[str] = set()
    seen: set[object] = set()
    stack = [total.grad_fn] if total.grad_fn is not None else []
    # Walk the autograd graph back from R, stopping at the first use of a prunable weight on each branch.
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node in outputs:
            found.add(outputs[node])
            continue
        stack.extend(nxt for nxt, _ in node.next_functions)
    return found


def check_tau_core(model: nn.Module, masks: Mapping[str, Tensor] | None, input_shape: Sequence[int]) -> None:
    """Refuse a model the tau-core cannot measure: one forward of the linear scoring net it runs on.

    A method that never scores by PWMP (RigL, SET, IMP, dense) still needs that net for the tau-core, so an op
    without a stand-in is reported as the tau-core's, with the switch that turns it off.

    Raises:
        PwmprError: the scoring net has no stand-in for an op of ``model``.
    """
    surrogate = linear_surrogate(model, masks)
    try:
        with torch.no_grad():
            surrogate_forward(surrogate, scoring_input(surrogate, normalize_input_shape(input_shape),
                                                       device_of(model)))
    except PwmprError as exc:
        raise PwmprError(f"the tau-core (a metric of every phase) runs on the linear scoring net, which cannot stand "
                         f"in for this model: {exc}; --no-tau-core turns the tau-core off") from None


def tau_core(
    model: nn.Module, masks: Mapping[str, Tensor] | None, input_shape: Sequence[int], tau: float = 0.9
) -> TauCore:
    """Greedy tau-core: remove the hidden unit with the largest path centrality until tau of the mass is gone.

    In the linear |W| network of :func:`pwmpr.surrogate.linear_surrogate` (docs/method.md, Score) on an
    all-ones input, the path centrality of unit v (an output channel of a prunable layer, summed over its
    spatial positions or tokens) is ``F_v * B_v``, and R, the sum of the outputs, is the total path mass. Each
    step zeroes the output of the unit with the largest remaining centrality, recomputes F and B (one float64
    forward + backward), and records the coverage ``1 - R / R_0``. Hidden units are the output channels of
    every prunable layer except those that produce the outputs (the classifier). In the linear net each step's
    coverage increment equals the removed unit's centrality, so greedy-with-recompute is the hourglass
    ``find_tau_core`` on the channel graph.

    A network with no input->output path (R = 0) has an empty core: size 0, ratio 0, no coverage, and
    ``reached`` True. If the mass left runs through no hidden unit (a skip from input to output), the greedy
    stops early with ``reached`` False.

    Args:
        model: the network (left unchanged).
        masks: ``{weight name: bool mask}``; weights without a mask count as dense. None: all dense.
        input_shape: one input without the batch dimension.
        tau: fraction of path mass the core must carry, in (0, 1].

    Returns:
        A :class:`TauCore`.

    Raises:
        PwmprError: a tau outside (0, 1], unknown mask names or wrong mask shapes, or an ``input_shape`` the
            model cannot take.
    """
    if not 0.0 < float(tau) <= 1.0:
        raise PwmprError(f"tau must be in (0, 1], got {tau}")
    tau = float(tau)
    surrogate = linear_surrogate(model, masks)
    shape = normalize_input_shape(input_shape)
    device = device_of(model)
    x = scoring_input(surrogate, shape, device)

    # Hidden units: the rows (output channels, features) of every prunable weight but those producing the outputs.
    params = dict(surrogate.named_parameters())
    final = _output_weights(surrogate, x)
    names = [n for n in prunable(surrogate) if n not in final]
    sizes = [params[n].shape[0] for n in names]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]  # offset of each hidden weight in the unit vector
    n_hidden = sum(sizes)
    # One keep vector for all hidden units; each use reads its weight's rows (so removing a unit is one
    # device-side index_fill, with no host sync).
    keep_all = torch.ones(n_hidden, dtype=torch.float64, device=device)
    offset = dict(zip(names, starts, strict=True))
    captured: list[tuple[int, Tensor, Tensor, int]] = []  # (offset, rows, output, unit dim)

    def zero_and_capture(name: str, positions, out: Tensor, unit_dim: int) -> Tensor:
        if name not in offset:
            return out
        rows = _unit_rows(name, positions, out.shape[unit_dim], params[name].shape).to(device)
        out = out * _along(keep_all[offset[name] + rows], out, unit_dim)
        captured.append((offset[name], rows, out, unit_dim))
        # Hand on a copy: an in-place op downstream must not change `out`.
        return out.clone()

    def centrality() -> tuple[Tensor, Tensor]:
        """R (a 0-d tensor, left on the device) and every hidden unit's F_v * B_v (one vector)."""
        captured.clear()
        with torch.enable_grad():
            total = sum_outputs(surrogate_forward(surrogate, x.detach().requires_grad_(True), zero_and_capture))
            outs = [c for c in captured if c[2].requires_grad]
            grads = torch.autograd.grad(total, [c[2] for c in outs], allow_unused=True) if outs else []
        cent = torch.zeros(n_hidden, dtype=torch.float64, device=device)
        for (start, rows, o, unit_dim), g in zip(outs, grads, strict=True):
            if g is not None:
                dim = unit_dim % o.dim()
                c = (o * g).sum(dim=[d for d in range(o.dim()) if d != dim])
                cent.index_add_(0, start + rows, c.detach())
        return total.detach(), cent

    coverage: list[float] = []
    units: list[tuple[str, int]] = []
    reached = True
    try:
        total0, cent = centrality()
        r0 = float(total0)
        # Greedy: remove the unit of largest remaining centrality, recompute, until tau of the mass is gone.
        # Steps run in chunks without looking at their results on the host (argmax, the "> 0" check and the
        # coverage stay on the device); one sync per chunk then finds where the greedy stopped. Steps past that
        # point change nothing before it, so the result is the step-by-step greedy's; the chunk doubles (4 to 64)
        # so a small core wastes few passes and a large one few syncs.
        chunk, done = 4, False
        while r0 > 0.0 and not done and len(units) < n_hidden:
            picks, valid, covs = [], [], []
            for _ in range(min(chunk, n_hidden - len(units))):
                best = torch.argmax(cent)
                picks.append(best)
                valid.append(cent[best] > 0.0)
                keep_all.index_fill_(0, best.view(1), 0.0)
                r, cent = centrality()
                covs.append(1.0 - r / r0)
            host = torch.stack([torch.stack(picks).double(), torch.stack(valid).double(), torch.stack(covs)]).cpu()
            for best_i, ok, cov in host.T.tolist():
                if not ok:
                    reached = False  # the mass left bypasses every hidden unit
                    done = True
                    break
                layer = bisect.bisect_right(starts, int(best_i)) - 1
                units.append((names[layer], int(best_i) - starts[layer]))
                coverage.append(cov)
                if cov >= tau - _TAU_SLACK:
                    done = True
                    break
            chunk = min(64, chunk * 2)
        if r0 > 0.0 and not done:
            reached = False  # every hidden unit is gone and tau is still not covered
    finally:
        captured.clear()
    size = len(units)
    return TauCore(
        tau=tau,
        size=size,
        n_hidden=n_hidden,
        ratio=size / n_hidden if n_hidden and r0 > 0.0 else 0.0,
        coverage=coverage,
        units=units,
        total=r0,
        reached=reached,
    )


def _along(vec: Tensor, output: Tensor, dim: int) -> Tensor:
    """``vec`` shaped to multiply ``output`` along ``dim``."""
    shape = [1] * output.dim()
    shape[dim] = -1
    return vec.view(shape)
