"""A linear layer over tokens is one weight every channel applies: its link stores that kernel once, broadcast over
the channels, and PHEW draws from it exactly as from a materialized copy (docs/method.md, "Operations")."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from pwmpr.graph import build_unit_graph
from pwmpr.graph.units import Link
from pwmpr.seed import phew_masks, sampling


class _TokenMixer(nn.Module):
    """(5 tokens, 3 features) -> a (6 channels) -> a linear over the tokens (5 -> 4) -> mean -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.t, self.head = nn.Linear(3, 6), nn.Linear(5, 4), nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.t(self.a(x).transpose(1, 2)).mean(-1))


def _token_link(model: nn.Module | None = None):
    graph = build_unit_graph(model or _TokenMixer(), (5, 3))
    (link,) = [link for link in graph.links if link.param == "t.weight"]
    return link


def test_the_weight_all_channels_share_is_stored_once():
    model = _TokenMixer()
    link = _token_link(model)
    assert link.groups == 6 and tuple(link.weight.shape) == (6, 1, 20)
    assert link.weight.stride(0) == 0 and link.positions.stride(0) == 0  # broadcast, not six copies
    assert link.weight.untyped_storage().nbytes() == 20 * 4
    torch.testing.assert_close(link.shared_kernel, model.t.weight.detach().abs().reshape(-1))


def test_a_shared_kernel_draws_what_its_materialized_copy_draws(monkeypatch):
    link = _token_link()
    copy = dataclasses.replace(link, weight=link.weight.contiguous(), positions=link.positions.contiguous())
    assert copy.shared_kernel is None
    o = torch.tensor([0, 1, 2, 3, 4, 5, 5, 0])
    c = link.local_src[o, 0]
    expected = sampling.sample_cells(copy, o, c, torch.Generator().manual_seed(7))

    def no_table(*args, **kwargs):
        raise AssertionError("a shared kernel needs no CDF per row")

    monkeypatch.setattr(sampling, "draw_cells", no_table)
    assert torch.equal(sampling.sample_cells(link, o, c, torch.Generator().manual_seed(7)), expected)
    masks = {"t.weight": torch.rand(4, 5, generator=torch.Generator().manual_seed(1)) < 0.5}
    assert torch.equal(link.enabled(masks), copy.enabled(masks))
    entries = torch.tensor([0, 19, 20, 119, 57])
    assert torch.equal(link.flat_positions(entries), copy.flat_positions(entries))
    assert bool((link.flat_positions(entries) == entries % 20).all())  # every channel's entry j is weight entry j


@pytest.mark.parametrize("seed", [0, 3])
def test_phew_on_a_shared_kernel_enables_what_the_materialized_one_would(seed, monkeypatch):
    model = _TokenMixer()
    shared = phew_masks(model, 0.3, (5, 3), seed=seed)
    monkeypatch.setattr(Link, "shared_kernel", property(lambda self: None))  # every row's CDF, as before
    materialized = phew_masks(model, 0.3, (5, 3), seed=seed)
    assert all(torch.equal(shared[k], materialized[k]) for k in shared)


def test_a_float64_model_shares_its_kernel_too():
    link = _token_link(_TokenMixer().double())
    assert link.shared_kernel is not None and link.weight.untyped_storage().nbytes() == 20 * 4
