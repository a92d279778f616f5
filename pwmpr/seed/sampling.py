"""Drawing one column per row of a weight table by inverse CDF: the hops and kernel cells of PHEW walks."""

from __future__ import annotations

import torch
from torch import Tensor

from pwmpr.graph import Link


class RowSampler:
    """Inverse-CDF sampling of one column per requested row of a small nonnegative table.

    A row without mass is drawn uniformly over its ``valid`` columns (all columns by default). The rows' CDFs are
    laid end to end with row ``r`` shifted by ``r`` (one monotone array), so a whole batch is one ``searchsorted``.
    Columns of probability 0 are never drawn.
    """

    def __init__(self, table: Tensor, valid: Tensor | None = None) -> None:
        rows, self.cols = table.shape
        if self.cols == 1:
            return  # nothing to choose
        cdf = torch.empty(table.shape, dtype=torch.float64)
        cdf.copy_(table)  # one pass, whatever the table's layout and dtype
        cdf.cumsum_(1)
        empty = cdf[:, -1] <= 0
        if bool(empty.any()):
            fallback = torch.ones(int(empty.sum()), self.cols, dtype=torch.float64) if valid is None else \
                valid.expand(table.shape)[empty].to(torch.float64)
            fallback[fallback.sum(1) <= 0] = 1.0  # nothing valid: never drawn in practice
            cdf[empty] = fallback.cumsum(1)
        cdf.div_(cdf[:, -1:].clone())  # the last entry is exactly 1.0
        # The last column with mass is the first whose CDF is 1.0 (later columns add nothing).
        self.last = torch.searchsorted(cdf, torch.ones(rows, 1, dtype=torch.float64)).squeeze(1)
        cdf.add_(torch.arange(rows, dtype=torch.float64)[:, None])
        self.flat = cdf.view(-1)

    def sample(self, rows: Tensor, gen: torch.Generator) -> Tensor:
        """One column per entry of ``rows`` (row indices), drawn with ``gen``."""
        if self.cols == 1:
            return torch.zeros_like(rows)
        u = torch.rand(rows.numel(), generator=gen, dtype=torch.float64)
        col = torch.searchsorted(self.flat, rows.to(torch.float64) + u, right=True) - rows * self.cols
        return torch.minimum(col, self.last[rows])  # r + u can round up to r + 1


CDF_CACHE_MAX = 1 << 23  # entries: links with kernel cells whose every (dst, src) CDF is worth keeping


def cell_cdf(table: Tensor, valid: Tensor, valid_rows: Tensor) -> Tensor:
    """Row-normalized CDFs of ``table``'s rows (a row without mass: uniform over its valid columns), float64."""
    w = table.to(torch.float64)
    ok = valid[valid_rows].to(torch.float64)
    w = torch.where((w.sum(1) > 0)[:, None], w, ok)
    cdf = w.cumsum(1)
    return cdf / cdf[:, -1:]


def draw_cells(table: Tensor, valid: Tensor, rows: Tensor, valid_rows: Tensor, gen: torch.Generator,
                cache: Tensor | None = None) -> Tensor:
    """One column per requested row of ``table`` with probability ``table[row, col]`` (uniform over the row's valid
    columns when its mass is 0), reading only the requested rows (or their CDFs from ``cache``)."""
    k = table.shape[1]
    u = torch.rand(rows.numel(), generator=gen, dtype=torch.float64)
    out = torch.empty_like(rows)
    step = max(1, (1 << 22) // k)
    for start in range(0, rows.numel(), step):
        chunk = rows[start : start + step]
        cdf = cache[chunk] if cache is not None else cell_cdf(table[chunk], valid, valid_rows[start : start + step])
        out[start : start + step] = (cdf <= u[start : start + step, None]).sum(1)
    return out


def sample_cells(link: Link, o: Tensor, c: Tensor, gen: torch.Generator, cache: Tensor | None = None) -> Tensor:
    """One entry of ``link`` between dst units ``o`` and src units ``c`` with probability ``|W0|`` (uniform if all
    are 0), as flat indices into the parameter.

    Reads the few cells of each requested pair straight from the weight, or from ``cache``, the CDF of every pair
    (kept only for small links: it costs as much memory as the weights in float64).
    """
    k = link.n_cells
    if link.groups == 1:
        cell = torch.zeros_like(o) if k == 1 else draw_cells(link.cells.view(-1, k), link.cell_valid,
                                                              o * link.n_src + c, c, gen, cache)
        feat = link.unit_features[c, cell // link.n_kernel]
        entry = (o * link.n_in + feat) * link.n_kernel + cell % link.n_kernel
    else:
        local = link.feature_of_unit[c] - (o // (link.n_dst // link.groups)) * link.n_in
        rows = o * link.n_in + local
        shared = link.shared_kernel
        if k == 1:
            cell = torch.zeros_like(o)
        elif shared is not None:  # every row reads the same kernel: one CDF, searched by each draw
            cdf = cell_cdf(shared[None], torch.ones(1, k, dtype=torch.bool), torch.zeros(1, dtype=torch.long))[0]
            u = torch.rand(rows.numel(), generator=gen, dtype=torch.float64)
            cell = torch.searchsorted(cdf, u, right=True).clamp(max=k - 1)
        else:
            cell = draw_cells(link.weight.view(-1, k), torch.ones(1, k, dtype=torch.bool), rows, torch.zeros_like(rows),
                              gen)
        entry = rows * k + cell
    return link.flat_positions(entry)
