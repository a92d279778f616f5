"""Every decision of the PWMPR method, through the runner and the CLI, on real offline digits; and that training learns.

Each test reads the decision back from the run folder (summary.json, history.jsonl) and checks why the run
stopped and what it grew, not only that it ran.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pwmpr.cli.app import app

runner = CliRunner()
BASE = ["--data", "digits", "--model", "mlp", "--batch-size", "64", "--final-epochs", "1", "--no-tau-core", "-q"]


def grow(out: Path, *args: str) -> tuple[dict, list[dict]]:
    result = runner.invoke(app, ["grow", *BASE, *args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    return summary, [r for r in rows if r["stage"] == "phase"]


def test_dense_training_learns(tmp_path):
    # Chance is 10%; a trainer that does not step, masks everything or shuffles labels stays near it.
    result = runner.invoke(app, ["baseline", "dense", "--data", "digits", "--model", "mlp", "--epochs", "3",
                                 "--no-tau-core", "-q", "--out", str(tmp_path / "dense")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "dense" / "summary.json").read_text())
    assert summary["test_acc"] >= 0.85


def test_gain_rule_stops_when_growing_on_buys_less_than_tol(tmp_path):
    # --max-cost 0: with 1 final epoch as the dense reference, the cost guard would decide first.
    summary, phases = grow(tmp_path / "r", "--seed-density", "0.3", "--phase-epochs", "3", "--stop", "gain",
                           "--stop-tol", "0.01", "--plateau-tol", "0", "--max-phases", "12", "--max-cost", "0")
    assert summary["stop_reason"] == "saturated"
    last = phases[-1]
    assert last["stop_rule"] == "gain" and last["decision"] == "saturated"
    assert len(phases) >= 5  # min_points 4 + consecutive 2 - 1
    post = last["posterior"]
    # The tolerance the rule decided at: --stop-tol, or the gain 144 validation samples resolve where that is larger.
    assert post["tol"] == last["stop_tol_used"] >= 0.01
    assert post["p_gain_below_tol"] >= 0.9 and post["cap"] == 1.0
    assert phases[-2]["posterior"]["p_gain_below_tol"] >= 0.9  # two consecutive refits agreed
    assert all(p["decision"] == "grow" for p in phases[:-1])
    assert all(0.0 <= q <= 1.0 for q in post["q05"] + post["q95"])
    assert all(b["density"] == pytest.approx(a["density"] * 1.25, rel=0.01) for a, b in zip(phases, phases[1:],
                                                                                          strict=False))
    assert summary["discovered_density"] == pytest.approx(last["density"])
    assert summary["test_acc"] >= 0.85  # the network it found has learned


def test_unbounded_paper_rule_stops_on_the_early_rise_where_the_bounded_one_does_not(tmp_path):
    args = ["--seed-density", "0.01", "--phase-epochs", "10", "--max-phases", "5"]
    summary, phases = grow(tmp_path / "today", *args, "--stop", "paper-unbounded")
    assert summary["stop_reason"] == "saturated" and len(phases) == 5  # the earliest refit the rule allows
    fit = phases[-1]["fit"]
    assert fit["rho_star"] <= phases[-1]["density"]
    summary, phases = grow(tmp_path / "fixed", *args, "--stop", "paper")
    assert summary["stop_reason"] == "max-phases"
    assert phases[-1]["fit_status"]  # says why it keeps growing


def test_plateau_fallback_stops_flat_runs(tmp_path):
    summary, phases = grow(tmp_path / "r", "--seed-density", "0.3", "--phase-epochs", "3", "--stop", "none",
                           "--plateau-tol", "0.05", "--max-phases", "12", "--max-cost", "0")
    assert summary["stop_reason"] == "plateau"
    assert len(phases) == 6  # window of 5 points, 2 refits in a row
    assert "plateau" in phases[-1]["plateau_status"]


def test_the_default_stop_rule_is_the_plateau_rule(tmp_path):
    # No --stop: the plateau rule decides (here at 5 points per doubling, so that a flat digits run stops surely).
    summary, phases = grow(tmp_path / "r", "--seed-density", "0.3", "--phase-epochs", "3", "--plateau-tol", "0.05",
                           "--max-phases", "12", "--max-cost", "0")
    last = phases[-1]
    assert summary["stop_reason"] == "plateau" and last["stop_rule"] == "plateau"
    assert len(phases) == 6 and "gain per doubling of density" in last["fit_status"]
    assert "stop_tol_used" not in last and last["posterior"] is None  # no gain-rule posterior is computed


def test_max_density_clamps_the_last_step(tmp_path):
    summary, phases = grow(tmp_path / "r", "--seed-density", "0.05", "--gamma", "1.5", "--max-density", "0.1",
                           "--phase-epochs", "1", "--stop", "none")
    assert summary["stop_reason"] == "max-density"
    assert [round(p["density"], 3) for p in phases] == [0.05, 0.1]  # x2.5 would overshoot: clamped to 0.1


def test_no_growth_candidates_left(tmp_path):
    # A huge gamma grows every edge with a non-zero PWMP score at once; the next step has none left (plain pwmp,
    # which never recruits a unit the seed missed).
    summary, phases = grow(tmp_path / "r", "--seed-density", "0.05", "--gamma", "1000", "--phase-epochs", "1",
                           "--stop", "none", "--max-phases", "5", "--max-cost", "0", "--growth", "pwmp")
    assert summary["stop_reason"] == "no-growth-candidates"
    assert len(phases) == 2 and phases[-1]["n_added"] == 0
    assert phases[0]["n_added"] > 0 and phases[1]["density"] < 1.0  # edges of dead units score 0: never grown


def test_max_phases(tmp_path):
    summary, phases = grow(tmp_path / "r", "--seed-density", "0.05", "--phase-epochs", "1", "--max-phases", "2")
    assert summary["stop_reason"] == "max-phases" and len(phases) == 2


@pytest.mark.parametrize("rule", ["pwmp", "pwmp-topk", "random", "gradient"])
def test_each_growth_rule_grows_gamma_of_the_edges(tmp_path, rule):
    summary, phases = grow(tmp_path / rule, "--seed-density", "0.05", "--phase-epochs", "1", "--max-phases", "2",
                           "--growth", rule)
    assert summary["growth_rule"] == rule
    assert phases[0]["n_added"] == math.floor(0.25 * phases[0]["n_nonzero"] + 0.5)  # halves up (test_counting)
    assert phases[1]["n_nonzero"] == phases[0]["n_nonzero"] + phases[0]["n_added"]


def test_a_run_at_chance_keeps_growing_where_a_flat_curve_would_stop_it(tmp_path):
    """Inputs that carry nothing and training labels of one class: the network says class 0 for every sample, and
    its validation accuracy is the 70% that class holds there at every phase: well above 1/2 classes, but what
    guessing the commonest class scores, a flat curve the plateau test would stop on after 6 points. The run grows
    on to --max-phases, and each held-back stop is recorded."""
    import torch

    import pwmpr

    x, y = torch.zeros(400, 8), torch.zeros(400, dtype=torch.long)  # it learns to say class 0 for everything
    xv, yv = torch.zeros(200, 8), (torch.arange(200) >= 140).long()  # 70% class 0: guessing it scores 0.7
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    res = pwmpr.grow_module(model, (x, y), val=(xv, yv), num_classes=2, out=tmp_path / "run", phase_epochs=1,
                            final_epochs=0,
                            stop={"max_phases": 9, "max_cost": 0}, growth={"rule": "pwmp"}, device="cpu", seed=0)
    rows = [json.loads(line) for line in (res.run_dir / "history.jsonl").read_text().splitlines()]
    phases = [r for r in rows if r["stage"] == "phase"]
    assert {r["val_majority"] for r in phases} == {0.7} and {r["val_acc"] for r in phases} == {0.7}
    assert res.summary["stop_reason"] == "max-phases" and len(phases) == 9
    assert [bool(r.get("chance_status")) for r in phases] == [False] * 5 + [True] * 4
