"""The tau-core: the smallest set of hidden units, found greedily, carrying a fraction tau of the path mass of the
linear |W| net (:func:`pwmpr.surrogate.linear_surrogate`). It changes no model and no mask.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pwmpr.errors import PwmprError
from pwmpr.masks import prunable, unit_axis
from pwmpr.probe import device_of, normalize_input_shape, sum_outputs
from pwmpr.surrogate import linear_surrogate, scoring_input, surrogate_forward

# Coverage is a ratio of float64 sums: a core that carries exactly tau of the mass must count as reaching tau.
_TAU_SLACK = 1e-12


@dataclass(frozen=True)
class TauCore:
    """The greedy tau-core of a masked network (see :func:`tau_core`).

    ``units``: ``(weight name, output channel or row)`` in removal order; ``coverage[k]``: the fraction of path mass
    removed after the first k+1. A smaller ``ratio`` means a bottleneck.
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


def _unit_rows(name: str, positions: Tensor | None, n_units: int, shape: Sequence[int], axis: int = 0) -> Tensor:
    """The index along the unit axis (``axis``: 0, or 1 for a matrix applied as ``x @ W + b``) of each output unit
    of one use of weight ``name``: its output channel or feature."""
    if positions is None:
        return torch.arange(n_units)
    first = positions.reshape(n_units, -1)[:, 0].cpu()
    return first % shape[1] if axis == 1 else first // max(1, math.prod(shape[1:]))


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
    """Refuse a model the tau-core cannot measure (one forward of its linear scoring net).

    Raises:
        PwmprError: the scoring net has no stand-in for an op of ``model``.
    """
    surrogate = linear_surrogate(model, masks)
    try:
        with torch.no_grad():
            surrogate_forward(surrogate, scoring_input(surrogate, normalize_input_shape(input_shape),
                                                       device_of(model)))
    except PwmprError as exc:
        raise PwmprError(f"the tau-core's linear scoring net cannot stand in for this model: {exc}; "
                         "pass --no-tau-core") from None


def tau_core(
    model: nn.Module, masks: Mapping[str, Tensor] | None, input_shape: Sequence[int], tau: float = 0.9
) -> TauCore:
    """Greedy tau-core: remove the hidden unit of largest path centrality ``F_v * B_v`` until tau of the mass is gone.

    Hidden units are the output channels of every prunable layer but the classifier (docs/method.md, Score). With
    no input->output path the core is empty and ``reached`` True; mass left only on skips stops it with ``reached``
    False.

    Args:
        masks: ``{weight name: bool mask}``; weights without a mask count as dense. None: all dense.
        input_shape: one input without the batch dimension.
        tau: fraction of path mass the core must carry, in (0, 1].

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
    axes = {n: unit_axis(surrogate, n) for n in names}
    sizes = [params[n].shape[axes[n]] for n in names]
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
        rows = _unit_rows(name, positions, out.shape[unit_dim], params[name].shape, axes[name]).to(device)
        out = out * _along_dim(keep_all[offset[name] + rows], out, unit_dim)
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


def _along_dim(vec: Tensor, output: Tensor, dim: int) -> Tensor:
    """``vec`` shaped to multiply ``output`` along ``dim``."""
    shape = [1] * output.dim()
    shape[dim] = -1
    return vec.view(shape)
