"""Cost and structure accounting beside the pipeline: training FLOPs (docs/method.md, Cost) and the tau-core.

Neither changes a model or a mask. FLOPs count the Conv/Linear multiply-accumulates of one example, dense and
with only the present weights; the tau-core is the smallest set of hidden units, found greedily, that carries
a fraction tau of the path mass of the linear |W| network of :func:`pwmpr.score.linear_surrogate`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from pwmpr.errors import PwmprError
from pwmpr.masks import PRUNABLE_TYPES, MaskSet
from pwmpr.probe import device_of, float_dtype_of, normalize_input_shape, run_forward, sum_outputs, training_mode
from pwmpr.score import guarded_forward, linear_surrogate

# Coverage is a ratio of float64 sums: a core that carries exactly tau of the mass must count as reaching tau.
_TAU_SLACK = 1e-12


# -- FLOPs ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerFlops:
    """Forward multiply-accumulates of one Conv/Linear layer for one example."""

    sparse: int  # present weights x output positions
    dense: int  # all weights x output positions
    positions: int  # output positions (conv) or tokens (linear) the weight is applied at, summed over calls


@dataclass(frozen=True)
class FlopCount:
    """Forward cost of the Conv/Linear layers for one example, sparse (present weights only) and dense.

    Convention: one multiply-accumulate counts as 1 (``nnz(W) * H_out * W_out``; docs/method.md, Cost); double
    every figure for the "2 FLOPs per MAC" convention. The ratio, which is what cost accounting normalises by,
    is the same under both. BatchNorm, activations, pooling, residual additions and attention matmuls are not
    counted (they are not prunable and are small next to the Conv/Linear layers of the models here).
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


@torch.no_grad()
def training_flops(model: nn.Module, masks: Mapping[str, Tensor] | None, input_shape: Sequence[int]) -> FlopCount:
    """Forward multiply-accumulates of the Conv/Linear layers of ``model``, dense and counting present weights only.

    A Conv layer costs ``nnz(mask) * output positions``, a Linear layer ``nnz(mask) * tokens`` (the product of
    the output's non-batch dims but the last: 1 for an ``(N, D)`` input, T for ``(N, T, D)``). Output sizes come
    from forward hooks on one all-zeros example; a layer used twice is counted twice.

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

    names = {m: (f"{n}.weight" if n else "weight") for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}
    positions = dict.fromkeys(names.values(), 0)

    def count(module: nn.Module, _inputs, output: Tensor) -> None:
        # Linear: tokens = all non-batch dims but the features; Conv: all dims after (batch, channels).
        dims = output.shape[1:-1] if isinstance(module, nn.Linear) else output.shape[2:]
        positions[names[module]] += math.prod(dims)

    handles = [m.register_forward_hook(count) for m in names]
    try:
        with training_mode(model, False):
            run_forward(model, torch.zeros((1, *shape), device=device_of(model), dtype=float_dtype_of(model)))
    finally:
        for h in handles:
            h.remove()

    layers = {}
    for module, name in names.items():
        nnz = int(masks[name].sum()) if name in masks else module.weight.numel()
        layers[name] = LayerFlops(nnz * positions[name], module.weight.numel() * positions[name], positions[name])
    return FlopCount(sum(f.sparse for f in layers.values()), sum(f.dense for f in layers.values()), layers)


# -- tau-core ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TauCore:
    """The greedy tau-core of a masked network (see :func:`tau_core`).

    ``units`` are ``(weight name, output channel)`` pairs in the order they were removed; ``coverage[k]`` is the
    fraction of the path mass R removed after the first k+1 of them. A smaller ``ratio`` means the paths are
    funnelled through fewer units (a bottleneck).
    """

    tau: float
    size: int  # units in the core
    n_hidden: int  # hidden units in the network (output channels of every non-final prunable layer)
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


def _output_layers(surrogate: nn.Module, x: Tensor, modules: Mapping[nn.Module, str]) -> set[str]:
    """Names of the prunable layers that produce the outputs: reached from R without crossing another one."""
    outputs: dict[object, str] = {}

    def record(module: nn.Module, _inputs, output: Tensor) -> None:
        if isinstance(output, Tensor) and output.grad_fn is not None:
            outputs[output.grad_fn] = modules[module]

    handles = [m.register_forward_hook(record) for m in modules]
    try:
        with torch.enable_grad():
            total = sum_outputs(guarded_forward(surrogate, x.detach().requires_grad_(True)))
    finally:
        for h in handles:
            h.remove()
    found: set[str] = set()
    seen: set[object] = set()
    stack = [total.grad_fn] if total.grad_fn is not None else []
    # Walk the autograd graph back from R, stopping at the first prunable layer on each branch.
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


def tau_core(
    model: nn.Module, masks: Mapping[str, Tensor] | None, input_shape: Sequence[int], tau: float = 0.9
) -> TauCore:
    """Greedy tau-core: remove the hidden unit with the largest path centrality until tau of the mass is gone.

    In the linear |W| network of :func:`pwmpr.score.linear_surrogate` (docs/method.md, Score) on an
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
    x = torch.ones((1, *shape), dtype=torch.float64, device=device)

    # Hidden layers: every prunable layer but those whose output is the model's output.
    modules = {
        m: (f"{n}.weight" if n else "weight") for n, m in surrogate.named_modules() if isinstance(m, PRUNABLE_TYPES)
    }
    final = _output_layers(surrogate, x, modules)
    hidden = [(m, n) for m, n in modules.items() if n not in final]
    names = [n for _, n in hidden]
    sizes = [_n_units(m) for m, _ in hidden]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]  # offset of each hidden layer in the unit vector
    n_hidden = sum(sizes)
    # One keep vector for all hidden units; each layer's hook reads its own slice (a view), so removing a unit
    # is one device-side index_fill, with no host sync.
    keep_all = torch.ones(n_hidden, dtype=torch.float64, device=device)
    keep = {n: keep_all[start:start + k] for n, start, k in zip(names, starts, sizes, strict=True)}
    channel_dims = {n: _channel_dim(m) for m, n in hidden}
    captured: dict[str, list[Tensor]] = {n: [] for n in names}

    def zero_and_capture(module: nn.Module, _inputs, output: Tensor) -> Tensor:
        name = modules[module]
        out = output * _channel_view(keep[name], output, channel_dims[name])
        captured[name].append(out)
        # Hand on a copy: an in-place op downstream (``F.relu(conv(x), inplace=True)``) must not change `out`.
        return out.clone()

    def centrality() -> tuple[Tensor, Tensor]:
        """R (a 0-d tensor, left on the device) and every hidden unit's F_v * B_v (one vector)."""
        for lst in captured.values():
            lst.clear()
        with torch.enable_grad():
            total = sum_outputs(surrogate(x.detach().requires_grad_(True)))
            outs = [(n, o) for n, lst in captured.items() for o in lst if o.requires_grad]
            grads = torch.autograd.grad(total, [o for _, o in outs], allow_unused=True) if outs else []
        cent = torch.zeros(n_hidden, dtype=torch.float64, device=device)
        for (n, o), g in zip(outs, grads, strict=True):
            if g is not None:
                channel = channel_dims[n] % o.dim()
                c = (o * g).sum(dim=[d for d in range(o.dim()) if d != channel])
                start = starts[names.index(n)]
                cent[start : start + c.numel()] += c.detach()
        return total.detach(), cent

    handles = [m.register_forward_hook(zero_and_capture) for m, _ in hidden]
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
        for h in handles:
            h.remove()
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


def _n_units(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def _channel_dim(module: nn.Module) -> int:
    """Where a layer's output units sit: the last dim for Linear (features), dim 1 for Conv (channels)."""
    return -1 if isinstance(module, nn.Linear) else 1


def _channel_view(vec: Tensor, output: Tensor, dim: int) -> Tensor:
    shape = [1] * output.dim()
    shape[dim] = -1
    return vec.view(shape)
