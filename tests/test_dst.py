"""RigL and SET baselines: ERK densities, exact counts, hand-worked mask updates, schedules, and the CLI end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
from runfiles import history, without_timing
from safetensors.torch import load_file
from torch import nn
from typer.testing import CliRunner

from pwmpr.cli.app import app
from pwmpr.config import RunConfig
from pwmpr.errors import PwmprError
from pwmpr.masks import MaskSet
from pwmpr.methods import METHODS, RunContext
from pwmpr.methods.dst import RiglOptions, SetOptions, erk_densities, layer_counts, random_masks, schedule_lr
from pwmpr.methods.rewire import pick_absent

runner = CliRunner()
TINY = ["--data", "digits", "--model", "mlp", "--batch-size", "64", "--max-train", "400", "--no-tau-core", "-q"]


def _method(name: str, epochs: int, **options):
    return METHODS.get(name)(RunConfig(method=name, phase_epochs=epochs, final_epochs=epochs, options=options))


# -- layer densities ---------------------------------------------------------------------------------------------
def test_erk_densities_hand_worked():
    shapes = {"a": (2, 4), "b": (1, 2)}  # raw sum/prod: a 6/8 = 0.75, b 3/2 = 1.5
    # density 0.5: eps = 0.5 * 10 / (0.75 * 8 + 1.5 * 2) = 5 / 9.
    assert erk_densities(shapes, 0.5) == pytest.approx({"a": 0.75 * 5 / 9, "b": 1.5 * 5 / 9})
    # density 0.8: eps = 8 / 9 makes b 1.33 > 1, so b is dense and a holds the rest: 8 - 2 = 6 of 8.
    assert erk_densities(shapes, 0.8) == pytest.approx({"a": 0.75, "b": 1.0})
    assert erk_densities(shapes, 1.0) == {"a": 1.0, "b": 1.0}


def test_layer_counts_sum_to_the_total_by_largest_remainder():
    sizes = {"a": 8, "b": 2}
    # Targets a 3.33, b 1.67 (sum 5): floors 3 + 1, the edge left over goes to b (remainder 0.67).
    assert layer_counts(sizes, {"a": 0.75 * 5 / 9, "b": 1.5 * 5 / 9}, 5) == {"a": 3, "b": 2}
    assert layer_counts(sizes, {"a": 0.75, "b": 1.0}, 8) == {"a": 6, "b": 2}
    assert layer_counts({"a": 10, "b": 10, "c": 10}, {n: 0.25 for n in "abc"}, 8) == {"a": 3, "b": 3, "c": 2}


@pytest.mark.parametrize("distribution", ["erk", "uniform"])
def test_random_masks_have_exact_layer_counts(distribution):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    masks = random_masks(net, 0.2, distribution, torch.Generator().manual_seed(0))
    sizes = {"0.weight": 8 * 3 * 9, "3.weight": 10 * 128}
    dens = erk_densities({"0.weight": (8, 3, 3, 3), "3.weight": (10, 128)}, 0.2) if distribution == "erk" else \
        {n: 0.2 for n in sizes}
    assert masks.layer_nonzero() == layer_counts(sizes, dens, round(0.2 * sum(sizes.values())))
    assert masks.n_nonzero() == round(0.2 * sum(sizes.values()))
    again = random_masks(net, 0.2, distribution, torch.Generator().manual_seed(0))
    assert masks.equal(again)


# -- schedules ---------------------------------------------------------------------------------------------------
def test_rigl_drop_fraction_is_cosine_decayed_and_stops_at_75_percent():
    rigl = _method("rigl", 8)
    assert rigl.update_epochs_list() == [1, 2, 3, 4, 5]  # 6 = 0.75 x 8: no update from there on
    assert [rigl.drop_fraction(t) for t in range(1, 7)] == pytest.approx(
        [0.15 * (1 + math.cos(math.pi * t / 6)) for t in range(1, 6)] + [0.0])
    every_two = _method("rigl", 8, update_epochs=2)
    assert [every_two.phase_epochs(p) for p in range(4)] == [2, 2, 2, 2] and every_two.update_epochs_list() == [2, 4]


def test_set_updates_with_constant_zeta_after_every_epoch_but_the_last():
    set_ = _method("set", 5)
    assert set_.update_epochs_list() == [1, 2, 3, 4]
    assert [set_.drop_fraction(t) for t in (1, 4)] == [0.3, 0.3]
    assert [_method("set", 5, update_epochs=2).phase_epochs(p) for p in range(3)] == [2, 2, 1]


def test_the_learning_rate_follows_one_schedule_over_the_run_phase_by_phase():
    rigl = _method("rigl", 4, update_epochs=2)
    # Cosine over 4 epochs, held at its value at the middle of each 2-epoch phase (epochs 1 and 3).
    assert [rigl.phase_lr(p) for p in range(2)] == pytest.approx([0.05 * (1 + math.cos(math.pi / 4)),
                                                                  0.05 * (1 + math.cos(3 * math.pi / 4))])
    assert rigl.phase_schedule(0) == "constant"
    assert schedule_lr("step", 0.1, 3.5, 4) == pytest.approx(0.001) and schedule_lr("constant", 0.1, 3, 4) == 0.1


# -- one update, by hand -----------------------------------------------------------------------------------------
def _ctx(method, model, masks, batch=None):
    return RunContext(method.cfg, model, masks, (3,), [{"stage": "phase"}], torch.Generator().manual_seed(0),
                      sample_batch=(lambda: batch))


def test_rigl_update_hand_worked():
    net = nn.Sequential(nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -0.5, 0.0], [0.0, 3.0, -2.0]]))
    masks = MaskSet({"0.weight": torch.tensor([[1, 1, 0], [0, 1, 1]])})
    # x = (1, 2, 3), class 0: the logits are W x = (0, 0), softmax (0.5, 0.5), dL/dW = (p - onehot) x^T,
    # |dL/dW| = [[0.5, 1, 1.5], [0.5, 1, 1.5]].
    batch = (torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([0]))
    rigl = _method("rigl", 2, drop_fraction=0.5, decay="constant", end_fraction=1.0)
    decision = rigl.after_phase(_ctx(rigl, net, masks, batch))
    # floor(0.5 x 4) = 2 dropped: |w| 0.5 at (0,1) and 1 at (0,0). Regrown: the 2 largest |dL/dW| among the absent
    # (0,0) 0.5, (0,1) 1, (0,2) 1.5, (1,0) 0.5: (0,2) and (0,1). (0,1) was dropped and picked again: it stays.
    assert decision.masks["0.weight"].tolist() == [[False, True, True], [False, True, True]]
    assert decision.added["0.weight"].tolist() == [2]  # only (0,2) is new and starts at zero
    assert decision.reason == "update" and decision.info["n_dropped"] == 2 and decision.info["n_removed"] == 1
    assert decision.masks.n_nonzero() == masks.n_nonzero()


def test_rigl_regrows_edges_of_zero_gradient_so_every_layer_keeps_its_count():
    # A dense 3x4 layer (as ERK makes small layers) whose inputs 2 and 3 are always 0 (as MNIST's border pixels):
    # their weights have |dL/dw| = 0. floor(0.5 x 12) = 6 dropped, the smallest |w|: columns 2 and 3. They are
    # the only absent edges after the drop, all of gradient 0; RigL's top-k over the absent edges takes them back.
    net = nn.Sequential(nn.Linear(4, 3, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0, 0.1, 0.2], [1.5, 1.0, -0.3, 0.1], [-1.0, 2.5, 0.2, -0.1]]))
    masks = MaskSet({"0.weight": torch.ones(3, 4, dtype=torch.bool)})
    batch = (torch.tensor([[1.0, 2.0, 0.0, 0.0], [-1.0, 0.5, 0.0, 0.0]]), torch.tensor([0, 2]))
    rigl = _method("rigl", 2, drop_fraction=0.5, decay="constant", end_fraction=1.0)
    decision = rigl.after_phase(_ctx(rigl, net, masks, batch))
    assert (decision.info["n_dropped"], decision.info["n_grown"]) == (6, 6)
    assert decision.masks.n_nonzero() == 12 and decision.info["n_removed"] == 0
    assert decision.added["0.weight"].numel() == 0  # dropped and picked again: they keep their weights

    # Sparse, input 0 the only non-zero one: only column 0 has a gradient. 6 present edges, floor(0.5 x 6) = 3
    # dropped (|w| 0.05 at (0,0), 0.1 at (0,1), 0.2 at (1,3)). The one absent edge of positive gradient, (0,0),
    # comes back first, then the zero-gradient absent edges by position: (0,1), (0,2). The layer keeps its 6.
    sparse = MaskSet({"0.weight": torch.tensor([[1, 1, 0, 1], [1, 0, 0, 1], [1, 0, 0, 0]]).bool()})
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.05, 0.1, 0.0, 3.0], [1.5, 0.0, 0.0, 0.2], [2.0, 0.0, 0.0, 0.0]]))
    one = (torch.tensor([[1.0, 0.0, 0.0, 0.0]]), torch.tensor([0]))
    step = rigl.after_phase(_ctx(rigl, net, sparse, one))
    assert (step.info["n_dropped"], step.info["n_grown"]) == (3, 3) and step.masks.n_nonzero() == 6
    assert step.masks["0.weight"].tolist() == [[True, True, True, True], [True, False, False, False],
                                               [True, False, False, False]]
    assert step.added["0.weight"].tolist() == [2] and step.info["n_removed"] == 1


def test_pick_absent_tops_up_with_zero_scores_by_position_only_when_asked():
    masks = MaskSet({"a": torch.tensor([False, False, True, False, False, False])})
    scores = {"a": torch.tensor([0.0, 0.0, 9.0, float("nan"), 3.0, 0.0], dtype=torch.float64)}
    assert pick_absent(masks, scores, 3, rule="gradient", generator=None)["a"].tolist() == [4]  # growth's rule
    # Top-k over all absent edges: 3.0 first, then the zeros by position; NaN never before a finite score.
    assert pick_absent(masks, scores, 3, rule="gradient", generator=None, fill=True)["a"].tolist() == [0, 1, 4]
    assert pick_absent(masks, scores, 5, rule="gradient", generator=None, fill=True)["a"].tolist() == [0, 1, 3, 4, 5]
    assert pick_absent(masks, scores, 9, rule="gradient", generator=None, fill=True)["a"].tolist() == [0, 1, 3, 4, 5]


def test_set_update_hand_worked():
    net = nn.Sequential(nn.Linear(4, 2, bias=False), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.4, -0.1, 0.0, 0.7], [0.0, 0.2, -0.3, 0.0]]))
        net[1].weight.copy_(torch.tensor([[0.5, -0.6]]))
    masks = MaskSet({"0.weight": torch.tensor([[1, 1, 0, 1], [0, 1, 1, 0]]), "1.weight": torch.tensor([[1, 1]])})
    set_ = _method("set", 3, drop_fraction=0.5)
    decision = set_.after_phase(_ctx(set_, net, masks))
    # Layer 0: 5 present, floor(2.5) = 2 dropped: |w| 0.1 at (0,1) and 0.2 at (1,1); 2 regrown at random among
    # the 5 absent after the drop. Layer 1: floor(1) = 1 dropped (0.5 at (0,0)) and 1 regrown among 1: itself.
    new, kept = decision.masks["0.weight"], torch.tensor([[1, 0, 0, 1], [0, 0, 1, 0]]).bool()
    assert torch.all(new[kept]) and int(new.sum()) == 5  # the three largest stay, two of the five absent come
    assert decision.masks["1.weight"].tolist() == [[True, True]] and decision.added["1.weight"].numel() == 0
    again = set_.after_phase(_ctx(set_, net, masks))  # the same generator state draws the same edges
    assert again.masks.equal(decision.masks)


def test_no_update_after_the_end_and_a_stop_at_the_budget():
    net = nn.Sequential(nn.Linear(3, 2, bias=False))
    masks = MaskSet({"0.weight": torch.ones(2, 3, dtype=torch.bool)})
    rigl = _method("rigl", 4)
    late = _ctx(rigl, net, masks)
    late.history = [{"stage": "phase"}] * 3  # after epoch 3 = 0.75 x 4
    assert rigl.after_phase(late).masks is None and not rigl.after_phase(late).stop
    late.history = [{"stage": "phase"}] * 4
    assert rigl.after_phase(late).stop and rigl.after_phase(late).reason == "budget"


def test_bad_options_are_refused():
    with pytest.raises(PwmprError, match=r"RigL density must be in \(0, 1\]"):
        RiglOptions(density=1.5)
    with pytest.raises(PwmprError, match=r"SET density must be in \(0, 1\]"):
        SetOptions(density=0)
    with pytest.raises(PwmprError, match="drop fraction"):
        SetOptions(drop_fraction=1.0)
    with pytest.raises(PwmprError, match="unknown SET option"):
        SetOptions.from_options({"zeta": 0.3})
    assert SetOptions().decay == "constant" and SetOptions().end_fraction == 1.0 and RiglOptions().decay == "cosine"


# -- end to end --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["rigl", "set"])
def test_baseline_trains_at_a_fixed_density_for_its_budget(tmp_path, method):
    run = tmp_path / method
    result = runner.invoke(app, ["baseline", method, *TINY, "--epochs", "4", "--density", "0.1", "--out", str(run)])
    assert result.exit_code == 0, result.output
    rows = history(run)
    counts = [r["n_nonzero"] for r in rows]
    assert counts == [round(0.1 * 50200)] * 4
    assert all(r["layer_density"] == rows[0]["layer_density"] for r in rows)  # every layer keeps its count
    expected = ["update", "update", "continue", "budget"] if method == "rigl" else ["update"] * 3 + ["budget"]
    assert [r["decision"] for r in rows] == expected
    assert rows[-1]["cost_epochs"] == pytest.approx(1.0) and rows[-1]["epochs_total"] == 4
    summary = json.loads((run / "summary.json").read_text())
    assert summary["discovered_density"] == pytest.approx(0.1, abs=1e-4) and summary["stop_reason"] == "budget"
    final = load_file(run / "final.safetensors")
    masks = {k[5:]: v for k, v in final.items() if k.startswith("mask/")}
    assert all((final["model/" + n][~m] == 0).all() for n, m in masks.items())
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["method"] == method and cfg["options"]["drop_fraction"] == 0.3 and cfg["final_epochs"] == 4


def test_rigl_resume_continues_where_it_stopped(tmp_path):
    run = tmp_path / "rigl"
    args = ["baseline", "rigl", *TINY, "--epochs", "3", "--keep-checkpoints", "0", "--out", str(run)]
    assert runner.invoke(app, args).exit_code == 0
    before = history(run)
    (run / "summary.json").unlink()
    (run / "checkpoints" / "phase-0002.safetensors").unlink()
    (run / "checkpoints" / "phase-0001.safetensors").unlink()  # as if killed during the second phase
    result = runner.invoke(app, ["baseline", "rigl", "--resume", str(run), "-q"])
    assert result.exit_code == 0, result.output
    assert without_timing(history(run)) == without_timing(before)
