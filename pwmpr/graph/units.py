"""The unit graph: channel/feature groups linked by prunable layers, and the algorithms PHEW walks need.

:class:`UnitGraph` holds the groups and links that ``pwmpr.graph.trace`` reads from a model; its methods compute
path masses and branch masses in log scale, so that deep nets neither underflow nor overflow
(docs/method.md, Seed). The data structure knows nothing of torch.fx.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import Tensor

#: The attribute a module type declares to be walked as a whole (an attention block): a sequence of stages, each a
#: tuple of names of Linear children. Every child of a stage reads the previous stage's output (the first stage reads
#: the module's input) and a stage's outputs merge like a residual add; the module returns the last stage's output.
STAGES_HOOK = "phew_stages"


@dataclass
class Link:
    """A prunable layer seen as a bipartite link ``src`` units -> ``dst`` units.

    ``weight`` is ``|W0|`` arranged as ``[n_dst, n_src, n_cells]``: the cells of a conv are its kernel positions,
    the cells of a Linear fed by a flattened map are the ``outer x inner`` positions of each unit.
    """

    param: str
    src: int
    dst: int
    weight: Tensor
    shape: tuple[int, ...]
    outer: int = 1
    inner: int = 1

    @property
    def n_cells(self) -> int:
        return self.outer * self.inner

    @cached_property
    def strength(self) -> Tensor:
        """``N[o, c] = sum over cells of |W0[o, c, cell]|`` in float64, shape ``[n_dst, n_src]``."""
        return self.weight.sum(-1, dtype=torch.float64)

    def cells(self, t: Tensor) -> Tensor:
        """A tensor shaped like the weight, rearranged as ``[n_dst, n_src, n_cells]``."""
        n_dst, n_src, _ = self.weight.shape
        return t.reshape(n_dst, self.outer, n_src, self.inner).permute(0, 2, 1, 3).reshape(self.weight.shape)

    def uncells(self, t: Tensor) -> Tensor:
        """Inverse of ``cells``: back to the weight's own shape."""
        n_dst, n_src, _ = self.weight.shape
        return t.reshape(n_dst, n_src, self.outer, self.inner).permute(0, 2, 1, 3).reshape(self.shape)

    def flat_index(self, o: Tensor, c: Tensor, cell: Tensor) -> Tensor:
        """Flat index into the layer's weight of ``(dst unit, src unit, cell)`` triples."""
        n_src = self.weight.shape[1]
        a, b = cell // self.inner, cell % self.inner
        return o * (self.outer * n_src * self.inner) + a * (n_src * self.inner) + c * self.inner + b


@dataclass
class Group:
    """A set of ``n`` units; ``kind`` is ``input``, ``layer`` (made by link ``link``) or ``merge`` (of ``operands``)."""

    n: int
    kind: str
    name: str
    link: int | None = None
    operands: list[int] = field(default_factory=list)
    consumers: list[tuple[str, int]] = field(default_factory=list)  # ("link", link id) or ("merge", group id)


@dataclass
class UnitGraph:
    """Unit groups in topological order (group 0 is the input) and the links between them."""

    groups: list[Group]
    links: list[Link]
    output: int

    @property
    def n_inputs(self) -> int:
        return self.groups[0].n

    @property
    def n_outputs(self) -> int:
        return self.groups[self.output].n

    def params(self) -> list[str]:
        """Names of the prunable weights the graph walks through (each once, in order of first use)."""
        return list(dict.fromkeys(link.param for link in self.links))

    def depth(self) -> int:
        """The largest number of links on an input-to-output path."""
        longest = [0] * len(self.groups)
        for g, group in enumerate(self.groups):
            if group.kind == "layer":
                longest[g] = longest[self.links[group.link].src] + 1
            elif group.kind == "merge":
                longest[g] = max(longest[o] for o in group.operands)
        return longest[self.output]

    def path_masses(self) -> tuple[list[tuple[Tensor, float]], list[tuple[Tensor, float]]]:
        """Forward and backward path masses of every group in the ``N``-weighted channel graph.

        ``F[g]`` sums, over all input-to-unit paths, the product of ``N`` along the path (``F = 1`` at the
        input); ``B[g]`` sums over all unit-to-output paths (``B = 1`` at the output). Each is returned as
        ``(vector scaled to max 1, natural log of the scale)`` so deep nets cannot overflow; an all-zero
        vector has scale ``-inf``.
        """
        fwd: list[tuple[Tensor, float]] = []
        for group in self.groups:
            if group.kind == "input":
                fwd.append((torch.ones(group.n, dtype=torch.float64), 0.0))
            elif group.kind == "layer":
                link = self.links[group.link]
                vec, scale = fwd[link.src]
                fwd.append(_rescale(link.strength @ vec, scale))
            else:
                fwd.append(_log_sum([fwd[o] for o in group.operands]))
        bwd: list[tuple[Tensor, float]] = [(torch.zeros(0), -math.inf)] * len(self.groups)
        for g in reversed(range(len(self.groups))):
            if g == self.output:
                bwd[g] = (torch.ones(self.groups[g].n, dtype=torch.float64), 0.0)
            else:
                bwd[g] = _log_sum(self.branch_masses(g, bwd) or [_zero(self.groups[g].n)])
        return fwd, bwd

    def branch_masses(self, g: int, bwd: Sequence[tuple[Tensor, float]]) -> list[tuple[Tensor, float]]:
        """Backward mass that reaches the output through each consumer of group ``g`` (per unit, log-scaled)."""
        out = []
        for kind, idx in self.groups[g].consumers:
            if kind == "link":
                vec, scale = bwd[self.links[idx].dst]
                out.append(_rescale(self.links[idx].strength.T @ vec, scale))
            else:
                out.append(bwd[idx])
        return out

    def live_units(self, masks: Mapping[str, Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per group, which units an enabled path reaches from the input (``fwd``) and which reach the output (``bwd``).

        Exact boolean reachability under ``masks`` (a missing mask means a dense layer); identity paths of
        merges always conduct.
        """
        conn = [self._connected(link, masks) for link in self.links]
        fwd: list[Tensor] = []
        for group in self.groups:
            if group.kind == "input":
                fwd.append(torch.ones(group.n, dtype=torch.bool))
            elif group.kind == "layer":
                fwd.append((conn[group.link] & fwd[self.links[group.link].src][None, :]).any(1))
            else:
                fwd.append(torch.stack([fwd[o] for o in group.operands]).any(0))
        bwd: list[Tensor] = [torch.zeros(0, dtype=torch.bool)] * len(self.groups)
        for g in reversed(range(len(self.groups))):
            alive = torch.zeros(self.groups[g].n, dtype=torch.bool)
            if g == self.output:
                alive[:] = True
            for kind, idx in self.groups[g].consumers:
                if kind == "link":
                    alive |= (conn[idx] & bwd[self.links[idx].dst][:, None]).any(0)
                else:
                    alive |= bwd[idx]
            bwd[g] = alive
        return fwd, bwd

    def dead_edges(self, masks: Mapping[str, Tensor]) -> dict[str, int]:
        """Per walked weight, the number of enabled entries that lie on no enabled input-to-output path."""
        fwd, bwd = self.live_units(masks)
        live: dict[str, Tensor] = {}
        for link in self.links:
            ok = (bwd[link.dst][:, None, None] & fwd[link.src][None, :, None]).expand(link.weight.shape)
            ok = link.uncells(ok)
            live[link.param] = live[link.param] | ok if link.param in live else ok
        return {name: int((masks[name].cpu().bool() & ~ok).sum()) for name, ok in live.items() if name in masks}

    @staticmethod
    def _connected(link: Link, masks: Mapping[str, Tensor]) -> Tensor:
        """``[n_dst, n_src]``: whether any cell between the two units is enabled (a missing mask is dense)."""
        if link.param not in masks:
            return torch.ones(link.weight.shape[:2], dtype=torch.bool)
        return link.cells(masks[link.param].cpu().bool()).any(-1)


def _zero(n: int) -> tuple[Tensor, float]:
    return torch.zeros(n, dtype=torch.float64), -math.inf


def _rescale(vec: Tensor, scale: float) -> tuple[Tensor, float]:
    """``(vec, scale)`` with ``vec`` rescaled to max 1 and the factor moved into the log scale."""
    top = float(vec.max()) if vec.numel() else 0.0
    if top <= 0.0 or scale == -math.inf:
        return _zero(vec.numel())
    return vec / top, scale + math.log(top)


def _log_sum(terms: Sequence[tuple[Tensor, float]]) -> tuple[Tensor, float]:
    """Sum of log-scaled vectors."""
    top = max(scale for _, scale in terms)
    if top == -math.inf:
        return _zero(terms[0][0].numel())
    vec = sum(v * math.exp(s - top) for v, s in terms if s != -math.inf)
    return _rescale(vec, top)


def mixing_weights(terms: Sequence[tuple[Tensor, float]]) -> Tensor:
    """``[n, k]`` weights proportional to the ``k`` log-scaled masses per unit; all-zero rows mean "no preference"."""
    top = max(scale for _, scale in terms)
    if top == -math.inf:
        return torch.zeros(terms[0][0].numel(), len(terms), dtype=torch.float64)
    return torch.stack([v * math.exp(s - top) if s != -math.inf else torch.zeros_like(v) for v, s in terms], 1)
