"""Density discovery's options: the noise-aware gain tolerance, the cost guard, recruiting growth (``pwmp-explore``)
and ``--final-init`` (docs/method.md, "gain", "Cost guard", "Recruiting units", "Final training").

Each test checks a decision: when the rule stopped and at which tolerance, when the guard stopped and what the run
then cost, which edges growth could reach, which weights final training started from.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from pwmpr import checkpoint, rundir
from pwmpr.cli.app import app
from pwmpr.config import RunConfig
from pwmpr.cost import guard_reach, projected_cost
from pwmpr.errors import PwmprError
from pwmpr.final_training import start_final_training, unpack_start
from pwmpr.growth import grow, recruit_values
from pwmpr.masks import MaskSet
from pwmpr.models import create_model
from pwmpr.score import pwmp_scores
from pwmpr.stop.decision import Observation
from pwmpr.stop.rules import StopContext, gain_rule, resolvable_gain

runner = CliRunner()
BASE = ["--data", "digits", "--model", "mlp", "--batch-size", "64", "--no-tau-core", "-q"]


def _grow(out: Path, *args: str) -> tuple[dict, list[dict]]:
    result = runner.invoke(app, ["grow", *BASE, *args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    return json.loads((out / "summary.json").read_text()), rows


# -- the gain rule decides at what the validation set can resolve -------------------------------------------------
def test_resolvable_gain_by_hand():
    # 400 samples at 70%: se = sqrt(0.7 * 0.3 / 400) = 0.022913; z_0.9 = 1.281552; over sqrt(4 points) -> 0.014682.
    points = [Observation(0.1, 0.5, 400), Observation(0.2, 0.7, 400)]
    assert resolvable_gain(points, 0.1, 4) == pytest.approx(1.281552 * math.sqrt(0.21 / 400) / 2, rel=1e-5)
    assert resolvable_gain([Observation(0.1, 0.7, None)], 0.1) == 0.0  # unknown size: the tolerance stays


def _accuracy(density: float) -> float:
    """A saturating accuracy curve: 95% at the top, within a point of it from density 0.18 on (its knee)."""
    return 0.95 - 0.85 * math.exp(-density / 0.04)


def _steps_past_knee(seed: int, tol: float, n_val: int = 144, alpha: float = 0.1) -> tuple[int, float]:
    """Grow x1.25 from density 0.01 with binomial validation noise until the gain rule stops; return how many growth
    steps past the knee it stopped (99 when it never did) and the tolerance it decided at."""
    rng = np.random.default_rng(seed)
    ctx = StopContext(chance=0.1, cap=1.0, min_points=4, consecutive=2, tol=tol, alpha=alpha)
    densities = [0.01 * 1.25 ** k for k in range(20)]
    knee = next(k for k, d in enumerate(densities) if _accuracy(d) >= _accuracy(1.0) - 0.01)
    points = []
    for k, d in enumerate(densities):
        points.append(Observation(d, rng.binomial(n_val, _accuracy(d)) / n_val, n_val))
        decision = gain_rule(points, ctx)
        if decision.stop:
            return k - knee, decision.tol
    return 99, decision.tol


@pytest.mark.parametrize("seed", range(5))
def test_a_tolerance_below_the_noise_still_stops_soon_after_the_knee(seed):
    # 144 validation samples (digits) cannot resolve a gain of 0.1 point; the rule decides at the gain 4 points on
    # them resolve (about 1 point here) and stops at most 3 growth steps past the knee. Waiting for 90% confidence
    # in a 0.1-point gain instead carries every one of these draws on to density 0.44, 4 steps past.
    steps, tol = _steps_past_knee(seed, tol=0.001)
    assert tol > 0.005
    assert steps <= 3


def test_a_resolvable_tolerance_is_kept():
    # With 100,000 validation samples the data resolve far less than 0.5 points: the rule decides at --stop-tol.
    _, tol = _steps_past_knee(0, tol=0.005, n_val=100_000)
    assert tol == 0.005


def test_tolerance_used_is_recorded_and_said_once(tmp_path):
    summary, rows = _grow(tmp_path / "r", "--seed-density", "0.3", "--phase-epochs", "2", "--final-epochs", "1",
                          "--stop", "gain", "--stop-tol", "0.001", "--plateau-tol", "0", "--max-phases", "6")
    phases = [r for r in rows if r["stage"] == "phase"]
    n = phases[0]["val_n"]
    for row in phases:
        expected = resolvable_gain([Observation(row["density"], row["val_acc"], n)], 0.1, 4)
        assert row["stop_tol_used"] == pytest.approx(expected)
        if row.get("posterior"):
            assert row["posterior"]["tol"] == pytest.approx(expected)
    loud = [a for a in BASE if a != "-q"]
    result = runner.invoke(app, ["grow", *loud, "--seed-density", "0.3", "--phase-epochs", "1", "--final-epochs",
                                 "0", "--stop", "gain", "--stop-tol", "0.001", "--max-phases", "3",
                                 "--out", str(tmp_path / "s")],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert result.output.count("below what") == 1 and "stop_tol_used" in result.output


def test_a_widened_plateau_window_is_recorded_and_said_once(tmp_path):
    # 144 validation samples resolve half a point per doubling only over 3.2 doublings: from 11 points on (x1.25
    # steps), the plateau test reads back that far, and says so once.
    loud = [a for a in BASE if a != "-q"]
    result = runner.invoke(app, ["grow", *loud, "--seed-density", "0.05", "--phase-epochs", "1", "--final-epochs",
                                 "0", "--max-cost", "0", "--max-phases", "12", "--plateau-resolve",
                                 "--out", str(tmp_path / "w")],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert result.output.count("validation samples resolve --plateau-tol") == 1, result.output
    rows = [json.loads(line) for line in (tmp_path / "w" / "history.jsonl").read_text().splitlines()]
    lines = [r["plateau_fit"] for r in rows if r["stage"] == "phase" and r.get("plateau_fit")]
    assert all(line["min_span"] == pytest.approx(math.log(10) / (144 * 0.005)) for line in lines)
    assert [line["points"] for line in lines][:6] == [5] * 6 and lines[6]["points"] >= 11


@pytest.mark.parametrize(("flags", "said"), [((), True), (("--plateau-tol", "0.03"), False),
                                              (("--plateau-resolve",), False)])
def test_a_last_points_window_narrower_than_the_validation_set_resolves_is_said_once(tmp_path, flags, said):
    # The last 5 points of x1.25 steps span 4 log2(1.25) = 1.29 doublings; 144 validation samples resolve half a
    # point per doubling only over ln(10) / (144 x 0.005) = 3.2 of them (3 points: 0.53, which the window spans).
    loud = [a for a in BASE if a != "-q"]
    result = runner.invoke(app, ["grow", *loud, "--seed-density", "0.05", "--phase-epochs", "1", "--final-epochs",
                                 "0", "--max-cost", "0", "--max-phases", "8", *flags, "--out", str(tmp_path / "n")],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert result.output.count("last 5 points span 1.3") == (1 if said else 0), result.output
    rows = [json.loads(line) for line in (tmp_path / "n" / "history.jsonl").read_text().splitlines()]
    fits = [r["plateau_fit"] for r in rows if r.get("plateau_fit")]
    tol = 0.03 if "0.03" in flags else 0.005
    assert fits and all(f["resolves_over"] == pytest.approx(math.log(10) / (144 * tol)) for f in fits)


@pytest.mark.parametrize(("flags", "said"), [(("--plateau-resolve",), True), ((), False),
                                              (("--plateau-resolve", "--plateau-tol", "0.03"), False)])
def test_a_plateau_test_that_can_never_stop_the_run_is_said_at_the_start(tmp_path, flags, said):
    # From density 0.5 one doubling is left; 144 samples need 3.2 at half a point (0.53 at 3 points per doubling).
    loud = [a for a in BASE if a != "-q"]
    result = runner.invoke(app, ["grow", *loud, "--seed-density", "0.5", "--phase-epochs", "1", "--final-epochs",
                                 "0", "--max-phases", "1", *flags, "--out", str(tmp_path / "u")],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert ("the plateau test cannot stop this run" in result.output) is said, result.output


# -- the cost guard ---------------------------------------------------------------------------------------------
def test_projected_cost_by_hand():
    # 1,000 training samples, a phase of 2 epochs at 100 forward FLOPs: 3 x 100 x 1,000 x 2 = 600,000 FLOPs; the
    # dense run (1,000 FLOPs, 10 epochs) is 3 x 1,000 x 1,000 x 10 = 3e7, so the run so far cost 0.02. Five more
    # epochs at 200 FLOPs: 3 x 200 x 1,000 x 5 = 3e6, 0.1 dense runs more.
    row = {"train_flops": 6e5, "fwd_flops_sparse": 100.0, "epochs": 2, "train_flops_total": 6e5, "cost_flops": 0.02}
    assert projected_cost(row, sparse_fwd=200.0, epochs=5) == pytest.approx(0.12)


def test_cost_guard_stops_exactly_when_the_next_phase_would_break_the_budget(tmp_path):
    limit = 0.6
    summary, rows = _grow(tmp_path / "r", "--seed-density", "0.05", "--phase-epochs", "1", "--final-epochs", "2",
                          "--stop", "none", "--plateau-tol", "0", "--max-phases", "30", "--max-cost", str(limit))
    phases = [r for r in rows if r["stage"] == "phase"]
    assert summary["stop_reason"] == "max-cost"
    assert phases[-1]["decision"] == "max-cost" and phases[-1]["cost_guard"]["over"]
    assert phases[-1]["cost_guard"]["projected"] > limit
    # Every step before it was within the budget, and grew.
    assert all(not r["cost_guard"]["over"] and r["cost_guard"]["projected"] <= limit for r in phases[:-1])
    assert all(r["decision"] == "grow" for r in phases[:-1]) and len(phases) >= 3
    # What the run then cost is the projection made one step earlier: the last phase it allowed, plus the final
    # training at that density. It is within the budget.
    final = rows[-1]
    assert final["stage"] == "final"
    assert final["cost_flops"] == pytest.approx(phases[-2]["cost_guard"]["projected"], rel=1e-9)
    assert summary["cost_flops"] <= limit
    # The reach projected at the first growth step is where the guard then stopped (an MLP's FLOPs follow its
    # density, so only the rounding of each step's edge count separates the two).
    assert phases[0]["cost_guard"]["reach"] == pytest.approx(phases[-1]["density"], rel=1e-3)


def test_guard_reach_by_hand():
    # Density 0.1 after a 1-epoch phase that cost 0.05 dense runs (0.1 so far); an epoch at density d costs d / 2.
    # Doubling (gamma 1), 1-epoch phases, 2 final epochs, limit 1: to 0.2, 0.1 + 3 x 0.1 = 0.4 (then 0.2 so far);
    # to 0.4, 0.2 + 3 x 0.2 = 0.8 (then 0.4 so far); to 0.8, 0.4 + 3 x 0.4 = 1.6 > 1: the guard stops at 0.4.
    row = {"density": 0.1, "train_flops": 5.0, "epochs": 1, "train_flops_total": 10.0, "cost_flops": 0.1,
           "fwd_flops_sparse": 10.0, "fwd_flops_dense": 100.0}
    reach = dict(gamma=1.0, phase_epochs=1, final_epochs=2)
    assert guard_reach(row, **reach, limit=1.0) == pytest.approx(0.4)
    # The last step lands on max_density (0.2, then 0.3: 0.2 + 3 x 0.15 = 0.65 fits).
    assert guard_reach(row, **reach, limit=1.0, max_density=0.3) == pytest.approx(0.3)
    # Already the next step breaks the budget: the density it is at.
    assert guard_reach(row, **reach, limit=0.3) == pytest.approx(0.1)
    # FLOPs that do not follow density (a conv net): at density 0.1 this forward costs 20 of the dense 100 FLOPs,
    # so an epoch costs 0.1 dense runs and a dense epoch 0.5; FLOPs go as 0.2 (d / 0.1)^a, a = ln 0.2 / ln 0.1
    # = 0.699, reaching the dense epoch at d = 1. Doubling, 1-epoch phases, no final epochs, limit 0.7: to 0.2,
    # 0.5 x 0.2 x 2^a = 0.162 (0.362 so far); to 0.4, 0.5 x 0.2 x 4^a = 0.264 (0.626); to 0.8, 0.428 more, 1.054
    # > 0.7: it stops at 0.4. Followed in proportion to density, 0.2 + 0.2 + 0.4 would have stopped it at 0.2.
    conv = {**row, "fwd_flops_sparse": 20.0, "train_flops": 10.0, "train_flops_total": 20.0, "cost_flops": 0.2}
    assert guard_reach(conv, gamma=1.0, phase_epochs=1, final_epochs=0, limit=0.7) == pytest.approx(0.4)
    # One step to density 1 costs exactly a dense epoch: 0.2 + 0.5 = 0.7 <= 0.75.
    assert guard_reach(conv, gamma=9.0, phase_epochs=1, final_epochs=0, limit=0.75) == pytest.approx(1.0)
    # No budget, or nothing to scale from (an empty network): the density it is at.
    assert guard_reach(row, **reach, limit=0.0) == pytest.approx(0.1)
    assert guard_reach({**row, "density": 0.0}, **reach, limit=1.0) == 0.0


def test_the_reach_the_docs_give_for_the_defaults_is_the_defaults_own():
    # B / (1 + (E_p / E_f)(1 + gamma) / gamma), the limit of the guard's steps (docs/method.md, "Cost guard"),
    # from today's defaults; the README and docs/method.md quote it.
    cfg = RunConfig()
    g = cfg.growth.gamma
    reach = cfg.stop.max_cost / (1 + cfg.phase_epochs / cfg.final_epochs * (1 + g) / g)
    root = Path(__file__).resolve().parents[1]
    assert f"near density {reach:.2f}" in " ".join((root / "README.md").read_text().split())
    assert f"= {reach:.4g}: a network" in " ".join((root / "docs" / "method.md").read_text().split())
    # The simulated steps from a small seed approach it from below (each phase's cost is counted as it is spent).
    row = {"density": 0.01, "train_flops": 1.0, "epochs": cfg.phase_epochs, "train_flops_total": 1.0,
           "cost_flops": 0.01 * cfg.phase_epochs / cfg.final_epochs, "fwd_flops_sparse": 0.01, "fwd_flops_dense": 1.0}
    simulated = guard_reach(row, gamma=g, phase_epochs=cfg.phase_epochs, final_epochs=cfg.final_epochs,
                            limit=cfg.stop.max_cost)
    assert reach / (1 + g) < simulated <= reach


def test_the_console_says_once_how_far_the_budget_lets_growth_go(tmp_path):
    args = ["grow", *[a for a in BASE if a != "-q"], "--seed-density", "0.05", "--phase-epochs", "1",
            "--final-epochs", "2", "--stop", "none", "--plateau-tol", "0", "--max-phases", "4"]
    said = runner.invoke(app, [*args, "--max-cost", "0.6", "--out", str(tmp_path / "a")])
    assert said.exit_code == 0, said.output
    text = " ".join(said.output.split())
    rows = [json.loads(line) for line in (tmp_path / "a" / "history.jsonl").read_text().splitlines()]
    reach = rows[0]["cost_guard"]["reach"]
    assert text.count("the cost guard will stop growth near density") == 1
    assert f"near density {reach:.2g} (an estimate" in text
    # A budget that reaches --max-density has nothing to warn about, and records no reach.
    quiet = runner.invoke(app, [*args, "--max-cost", "50", "--out", str(tmp_path / "b")])
    assert quiet.exit_code == 0, quiet.output
    assert "will stop growth near" not in " ".join(quiet.output.split())
    rows = [json.loads(line) for line in (tmp_path / "b" / "history.jsonl").read_text().splitlines()]
    assert all("reach" not in r["cost_guard"] for r in rows if r.get("cost_guard"))
    # A guard that stops the very first step says so in its own words, not with a projection as well.
    stopped = runner.invoke(app, [*args, "--max-cost", "0.02", "--out", str(tmp_path / "c")])
    assert stopped.exit_code == 0, stopped.output
    text = " ".join(stopped.output.split())
    assert "the cost guard stopped growth" in text and "will stop growth near" not in text


# -- recruiting growth -------------------------------------------------------------------------------------------
def _half_seeded_mlp() -> tuple[nn.Module, MaskSet]:
    """8 -> 6 -> 3; the seed reaches hidden units 0-3 from inputs 0-3 only, and hidden units 4 and 5 not at all."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    first = torch.zeros(6, 8, dtype=torch.bool)
    first[:4, :4] = True
    second = torch.zeros(3, 6, dtype=torch.bool)
    second[:, :4] = True
    return model, MaskSet({"0.weight": first, "2.weight": second})


def _touches_unseeded(added: dict[str, torch.Tensor]) -> int:
    rows_in = (added["0.weight"] // 8 >= 4).sum()  # an edge into hidden unit 4 or 5
    cols_out = (added["2.weight"] % 6 >= 4).sum()  # an edge out of hidden unit 4 or 5
    return int(rows_in + cols_out)


def test_pwmp_never_grows_into_a_unit_the_seed_missed_and_pwmp_explore_does():
    model, masks = _half_seeded_mlp()
    scores = pwmp_scores(model, masks, (8,))
    assert float(scores["0.weight"][4:].abs().sum() + scores["2.weight"][:, 4:].abs().sum()) == 0.0
    budget = round(0.25 * masks.n_nonzero())  # 28 edges: 7 grown, round(0.1 x 7) = 1 of them explored
    for seed in range(20):
        _, plain = grow(masks, scores, 0.25, rule="pwmp", generator=torch.Generator().manual_seed(seed))
        _, explore = grow(masks, scores, 0.25, rule="pwmp-explore", generator=torch.Generator().manual_seed(seed))
        assert _touches_unseeded(plain) == 0
        assert _touches_unseeded(explore) == 1
        assert sum(v.numel() for v in explore.values()) == budget


def test_pwmp_explore_grows_where_pwmp_has_no_candidate_left():
    # The seed's sub-network full (the no-growth-candidates wall): pwmp adds nothing, pwmp-explore the whole
    # budget, all of it into or out of the units the seed missed.
    model, masks = _half_seeded_mlp()
    first = masks["0.weight"].clone()
    first[:4, :] = True
    masks = MaskSet({"0.weight": first, "2.weight": masks["2.weight"]})
    scores = pwmp_scores(model, masks, (8,))
    _, plain = grow(masks, scores, 0.25, rule="pwmp", generator=torch.Generator().manual_seed(0))
    _, explore = grow(masks, scores, 0.25, rule="pwmp-explore", generator=torch.Generator().manual_seed(0))
    assert sum(v.numel() for v in plain.values()) == 0
    assert sum(v.numel() for v in explore.values()) == round(0.25 * masks.n_nonzero()) == _touches_unseeded(explore)


def test_recruits_start_non_zero_so_the_next_scores_reach_the_unit():
    model, masks = _half_seeded_mlp()
    scores = pwmp_scores(model, masks, (8,))
    new, added = grow(masks, scores, 0.25, rule="pwmp-explore", generator=torch.Generator().manual_seed(3))
    values = recruit_values(model, masks, scores, added, torch.Generator().manual_seed(0))
    recruited = {n: idx[scores[n].reshape(-1)[idx] == 0] for n, idx in added.items()}
    for name, weight in ((n, model.get_parameter(n).detach()) for n in masks):
        flat = values[name].reshape(-1) if name in values else torch.zeros(weight.numel())
        size = weight.abs()[masks[name]].mean()
        assert torch.equal(torch.nonzero(flat).squeeze(1), recruited[name].sort().values)  # recruits only
        assert torch.allclose(flat[recruited[name]].abs(), size.expand(len(recruited[name])))  # the layer's mean |w|
    # With the recruit's start in the model, the edges that complete its unit's paths score above 0: pwmp's own
    # draw can now recruit the unit. Had it started at zero, they would still score 0.
    with torch.no_grad():
        for name, v in values.items():
            model.get_parameter(name).mul_(new[name]).add_(v)
    [(layer, index)] = [(n, int(i)) for n, idx in recruited.items() for i in idx]
    after = pwmp_scores(model, new, (8,))
    if layer == "0.weight":  # an edge into hidden unit h: h's outgoing edges now have paths
        h = index // 8
        assert (after["2.weight"][:, h] > 0).all()
    else:  # an edge out of hidden unit h: h's incoming edges now have paths
        h = index % 6
        assert (after["0.weight"][h, :] > 0).all()


def test_pwmp_explore_run_starts_its_recruits_non_zero(tmp_path):
    _, rows = _grow(tmp_path / "r", "--seed-density", "0.01", "--growth", "pwmp-explore", "--phase-epochs", "1",
                    "--final-epochs", "1", "--max-phases", "2", "--stop", "none", "--max-cost", "0",
                    "--final-init", "rewind", "--keep-checkpoints", "0")
    n_recruits = rows[0]["n_recruits"]
    assert n_recruits > 0 and n_recruits < rows[0]["n_added"]
    tensors, _ = rundir.load_tensors(rundir.checkpoints(tmp_path / "r")[0])  # written right after the growth step
    state = rundir.split_prefix(tensors, rundir.MODEL_PREFIX)
    grown = rundir.split_prefix(tensors, rundir.MASK_PREFIX)
    seed = rundir.split_prefix(tensors, "start/mask/")
    new_edges = sum(int((grown[k] & ~seed[k]).sum()) for k in seed)
    started = sum(int((state[k][grown[k] & ~seed[k]] != 0).sum()) for k in seed)
    assert new_edges == rows[0]["n_added"] and started == n_recruits  # every other grown edge starts at zero


def test_configs_written_before_the_cost_guard_keep_their_meaning():
    old = RunConfig().to_dict()
    del old["stop"]["max_cost"]
    assert RunConfig.from_dict({**old, "version": 2}).stop.max_cost == 0.0  # its run had no guard
    assert RunConfig.from_dict(old).stop.max_cost == 1.5  # today's format: the default


# -- final training starts from the weights each --final-init promises -------------------------------------------
def _final_start(run: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """The model state and masks final training started from (the checkpoint of the phase growth stopped after)."""
    ck = next(c for c in reversed(rundir.checkpoints(run)) if rundir.load_tensors(c)[1]["stage"] == "final")
    tensors, meta = rundir.load_tensors(ck)
    return (rundir.split_prefix(tensors, rundir.MODEL_PREFIX), rundir.split_prefix(tensors, rundir.MASK_PREFIX),
            tensors)


def test_each_final_init_starts_final_training_from_the_weights_it_promises(tmp_path):
    args = ["--seed-density", "0.1", "--phase-epochs", "1", "--final-epochs", "1", "--stop", "none",
            "--plateau-tol", "0", "--max-phases", "3", "--keep-checkpoints", "0"]
    starts = {}
    for mode in ("continue", "reinit", "rewind", "shrink-perturb"):
        _grow(tmp_path / mode, *args, "--final-init", mode)
        starts[mode] = _final_start(tmp_path / mode)
    # The model's initial weights, as the run drew them (seeded by --seed before the model is built).
    torch.manual_seed(0)
    initial = create_model("mlp", 10, (1, 8, 8)).state_dict()
    seed_masks = rundir.split_prefix(rundir.load_tensors(rundir.checkpoints(tmp_path / "rewind")[0])[0], "start/mask/")
    grown = starts["continue"][1]
    assert all(torch.equal(starts[m][1][k], grown[k]) for m in starts for k in grown)  # one mask, three starts
    assert any((grown[k] & ~seed_masks[k]).any() for k in grown)  # growth did add edges
    continued, reinit, rewound = starts["continue"][0], starts["reinit"][0], starts["rewind"][0]
    shrunk = starts["shrink-perturb"][0]
    for name, value in initial.items():
        mask = grown.get(name)
        assert torch.equal(reinit[name], value * mask if mask is not None else value), name
        seed = seed_masks.get(name)
        assert torch.equal(rewound[name], value * seed if seed is not None else value), name
        assert not torch.equal(continued[name], reinit[name]), name  # trained for 3 phases
        # 0.4 x the grown weights + 0.1 x the initial ones, under the grown mask (the same growth as "continue").
        mixed = 0.4 * continued[name] + 0.1 * value
        assert torch.allclose(shrunk[name], mixed * mask if mask is not None else mixed, rtol=0, atol=1e-7), name
    # A resumed run gets the start back from any checkpoint written while growing.
    first = rundir.checkpoints(tmp_path / "rewind")[0]
    shapes = {k: tuple(v.shape) for k, v in initial.items()}
    state, seed = unpack_start(checkpoint.read(first, shapes).start)
    assert all(torch.equal(state[k], initial[k]) for k in initial)
    assert all(torch.equal(seed[k], seed_masks[k]) for k in seed_masks)
    # A run resumed from a checkpoint without the start cannot keep rewind's promise: an error, not a silent
    # "continue".
    with pytest.raises(PwmprError, match="final-init rewind needs the run's initial weights"):
        start_final_training(SimpleNamespace(start=None, cfg=RunConfig(final_init="rewind")))
    # The start is kept only until it is used: the final checkpoints carry no start/ tensors.
    assert not any(k.startswith("start/") for k in starts["rewind"][2])
    assert not any(k.startswith("start/") for c in rundir.checkpoints(tmp_path / "continue")
                   for k in rundir.load_tensors(c)[0])


def test_shrink_perturb_leaves_frozen_parameters_and_buffers_as_grown():
    """A frozen parameter could not train back from its shrink, and normalisation statistics are not weights."""
    from pwmpr.methods.final_init import shrunk_weights

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # "grown"
        model[1].running_mean.add_(2.0)
    model[0].weight.requires_grad_(False)
    state = shrunk_weights(model, lambda masks: initial, MaskSet({}), MaskSet({}))
    assert torch.equal(state["0.weight"], model[0].weight)
    assert torch.equal(state["1.running_mean"], model[1].running_mean)
    torch.testing.assert_close(state["2.weight"], 0.4 * model[2].weight + 0.1 * initial["2.weight"])
    torch.testing.assert_close(state["0.bias"], 0.4 * model[0].bias + 0.1 * initial["0.bias"])


def test_a_run_without_final_training_keeps_no_start(tmp_path):
    _grow(tmp_path / "run", "--seed-density", "0.1", "--phase-epochs", "1", "--final-epochs", "0", "--max-phases",
          "2", "--keep-checkpoints", "0")
    assert not any(k.startswith("start/") for c in rundir.checkpoints(tmp_path / "run")
                   for k in rundir.load_tensors(c)[0])


def test_pwmp_explore_recruits_no_query_or_key_weight_of_an_attention():
    """PWMP scores every query and key entry 0 by construction (uniform attention), not because its units have no
    path: the recruiting pool leaves them out, so on a transformer the explore share goes to unreached units only."""
    from pwmpr.attention import qk_groups
    from pwmpr.growth import GROWTH_RULES
    from pwmpr.models import create_model
    from pwmpr.seed import phew_masks

    torch.manual_seed(0)
    model = create_model("vit-mini", 10, (1, 8, 8))
    masks = phew_masks(model, 0.05, (1, 8, 8), seed=0)
    qk = {n: m for g in qk_groups(model, masks, (1, 8, 8)) for n, m in g.qk.items()}
    assert qk and all(float(pwmp_scores(model, masks, (1, 8, 8))[n][m].abs().sum()) == 0.0 for n, m in qk.items())
    scores = GROWTH_RULES.get("pwmp-explore").score(model, masks, (1, 8, 8))
    assert all(bool(scores[n][m].isnan().all()) for n, m in qk.items())
    _, added = grow(masks, scores, 0.25, rule="pwmp-explore", generator=torch.Generator().manual_seed(0))
    in_qk = sum(int(qk[n].reshape(-1)[idx].sum()) for n, idx in added.items() if n in qk)
    assert in_qk == 0 and sum(v.numel() for v in added.values()) > 0
