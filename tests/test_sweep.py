"""`pwmpr sweep`: the grid, the knee, resume, bad input; and `pwmpr compare` scoring a discovery against it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pwmpr import discovery
from pwmpr.cli.app import app
from pwmpr.errors import PwmprError
from pwmpr.sweep import SweepConfig, curve, knee

runner = CliRunner()
TINY = ["--data", "digits", "--model", "mlp", "--epochs", "1", "--batch-size", "64", "-q"]


def test_geometric_grid_lands_on_its_ends():
    assert SweepConfig.geometric(0.01, 1.0, 2.0) == [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0]
    assert SweepConfig.geometric(0.1, 0.1, 2.0) == [0.1]


def test_knee_is_the_smallest_density_within_tol_of_the_best():
    rows = [{"density": d, "test_acc": a} for d, a in
            [(0.01, 0.80), (0.02, 0.90), (0.04, 0.935), (0.08, 0.94), (0.16, 0.945), (1.0, 0.94)]]
    best, kn = knee(curve(rows), 0.01)
    assert best["density"] == 0.16 and kn["density"] == 0.04  # 0.935 >= 0.945 - 0.01; 0.90 is not
    assert knee(curve(rows), 0.0)[1]["density"] == 0.16


def test_curve_averages_seeds():
    rows = [{"density": 0.1, "test_acc": 0.8}, {"density": 0.1, "test_acc": 0.9}, {"density": 1.0, "test_acc": 0.95}]
    pts = curve(rows)
    assert pts[0]["test_acc"] == pytest.approx(0.85) and pts[0]["n_seeds"] == 2
    assert pts[0]["test_acc_std"] == pytest.approx(0.0707, abs=1e-3) and pts[1]["test_acc_std"] is None


def test_sweep_writes_the_curve_and_resumes(tmp_path):
    out = tmp_path / "sweep"
    result = runner.invoke(app, ["sweep", *TINY, "--densities", "0.1,1", "--seeds", "0,1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and [p["density"] for p in summary["curve"]] == [0.1, 1.0]
    assert all(p["n_seeds"] == 2 for p in summary["curve"])
    for d in ("d0.1-s0", "d0.1-s1", "d1-s0", "d1-s1"):
        s = json.loads((out / "runs" / d / "summary.json").read_text())
        assert s["method"] == "oneshot"
    density = json.loads((out / "runs" / "d0.1-s0" / "summary.json").read_text())["discovered_density"]
    assert density == pytest.approx(0.1, abs=0.002)
    assert {"curve.csv", "curve.md", "curve.png", "sweep.json"} <= {p.name for p in out.iterdir()}
    assert summary["knee"]["density"] in (0.1, 1.0)
    # A finished point is kept: resuming after its summary went missing reruns only that point.
    stamp = (out / "runs" / "d1-s0" / "summary.json").stat().st_mtime_ns
    (out / "runs" / "d0.1-s1" / "summary.json").unlink()
    (out / "summary.json").unlink()
    result = runner.invoke(app, ["sweep", "--resume", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert (out / "runs" / "d1-s0" / "summary.json").stat().st_mtime_ns == stamp
    assert json.loads((out / "summary.json").read_text())["curve"] == summary["curve"]


# Bad input to `pwmpr sweep`: the sweep-* cases of tests/test_bad_inputs.py (and docs/bad-inputs.md).


def test_sweep_trains_its_points_with_the_optimizer_it_is_given(tmp_path):
    """--optimizer and --weight-decay reach every point's run, and AdamW takes its own default learning rate."""
    out = tmp_path / "sweep"
    result = runner.invoke(app, ["sweep", *TINY, "--densities", "1", "--optimizer", "adamw", "--weight-decay", "0.05",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    train = json.loads((out / "runs" / "d1-s0" / "config.json").read_text())["train"]
    assert (train["optimizer"], train["weight_decay"], train["lr"]) == ("adamw", 0.05, None)


def test_sweep_config_round_trips_and_refuses_unknown_keys():
    cfg = SweepConfig(densities=[0.5, 0.1], seeds=[3])
    assert cfg.densities == [0.1, 0.5]
    assert SweepConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))).to_dict() == cfg.to_dict()
    with pytest.raises(PwmprError, match="unknown key"):
        SweepConfig.from_dict({**cfg.to_dict(), "extra": 1})


SWEEP = {"knee": {"density": 0.08, "test_acc": 0.93}, "best": {"density": 0.32, "test_acc": 0.94},
         "dense": {"density": 1.0, "test_acc": 0.935}}
IMP = [{"stage": "phase", "density": d, "cost_flops": c} for d, c in
       [(1.0, 1.0), (0.8, 1.8), (0.64, 2.44), (0.512, 2.95), (0.41, 3.36)]]


def run_summary(density, acc, cost):
    return {"discovered_density": density, "test_acc": acc, "cost_flops": cost, "cost_epochs": 3.0,
            "stop_reason": "saturated"}


def test_discovery_score_by_hand():
    s = discovery.score(run_summary(0.12, 0.935, 0.5), SWEEP, IMP)
    assert s["density_over_knee"] == pytest.approx(1.5) and s["gap_to_best"] == pytest.approx(-0.005)
    assert s["gap_to_dense"] == pytest.approx(0.0) and s["imp_cost_flops"] == pytest.approx(3.36)
    assert s["imp_cost_exact"] is False and s["hit"] is True  # 0.5 < a lower bound of IMP's cost: cheaper
    assert discovery.score(run_summary(0.12, 0.925, 0.5), SWEEP, IMP)["hit"] is False  # 1.5 points below best
    assert discovery.score(run_summary(0.17, 0.94, 0.5), SWEEP, IMP)["hit"] is False  # 2.1x the knee
    # IMP reaches 0.7 at its 0.64 level, for 2.44x: PWMPR at 2.5x is not cheaper.
    miss = discovery.score(run_summary(0.7, 0.94, 2.5), {**SWEEP, "knee": {"density": 0.5, "test_acc": 0.94}}, IMP)
    assert miss["imp_cost_flops"] == pytest.approx(2.44) and miss["imp_cost_exact"] and miss["hit"] is False
    assert discovery.score(run_summary(0.12, 0.935, 0.5), SWEEP, None)["hit"] is None  # IMP's cost unknown
    # Cheaper than IMP's 3.36+ but over the paper's budget of 1.5 dense runs: a miss.
    over = discovery.score(run_summary(0.12, 0.935, 1.6), SWEEP, IMP)
    assert over["within_cost"] is False and over["cheaper"] is True and over["hit"] is False


def test_compare_scores_runs_against_a_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    assert runner.invoke(app, ["sweep", *TINY, "--densities", "0.1,1", "--out", str(sweep)]).exit_code == 0
    run = tmp_path / "run"
    grow = ["grow", "--data", "digits", "--model", "mlp", "--phase-epochs", "1", "--final-epochs", "1",
            "--max-phases", "2", "--no-tau-core", "-q"]
    other = tmp_path / "other"  # trained at another batch size than the sweep: not its ground truth
    assert runner.invoke(app, [*grow, "--out", str(other)]).exit_code == 0
    result = runner.invoke(app, [*grow, "--batch-size", "64", "--out", str(run)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["compare", str(run), str(other), str(sweep), "--out", str(tmp_path / "cmp"),
                                 "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "1 PWMPR run(s) not scored for density discovery" in (tmp_path / "cmp" / "compare.md").read_text()
    payload = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    [row] = payload["discovery"]
    summary = json.loads((run / "summary.json").read_text())
    knee_density = json.loads((sweep / "summary.json").read_text())["knee"]["density"]
    assert row["discovered_density"] == pytest.approx(summary["discovered_density"])
    assert row["density_over_knee"] == pytest.approx(summary["discovered_density"] / knee_density)
    assert "Density discovery" in (tmp_path / "cmp" / "compare.md").read_text()
    assert "knee" in result.output
    assert Path(tmp_path / "cmp" / "compare.csv").is_file()


def test_a_run_is_scored_against_the_sweep_trained_as_it_was(tmp_path):
    """Of an AdamW sweep and an SGD sweep of the same model and data, an SGD run is scored against the SGD one."""
    from pwmpr.compare import discovery_rows
    from pwmpr.compare.records import RunRecord
    from pwmpr.config import RunConfig

    sweeps = []
    for optimizer, acc in (("adamw", 0.99), ("sgd", 0.90)):
        folder = tmp_path / optimizer
        folder.mkdir()
        base = RunConfig(model="mlp")
        base.train.optimizer = optimizer
        cfg = SweepConfig(densities=[0.1], base=base)
        (folder / "sweep.json").write_text(json.dumps(cfg.to_dict()))
        point = folder / "runs" / "d0.1-s0"  # the curve is computed from the points' own folders
        point.mkdir(parents=True)
        (point / "config.json").write_text(json.dumps(cfg.point_config(0.1, 0).to_dict()))
        (point / "summary.json").write_text(json.dumps(
            {"model": "mlp", "data": "mnist5k", "discovered_density": 0.1, "test_acc": acc, "val_acc": acc,
             "cost_flops": 0.1, "cost_epochs": 1.0}))
        sweeps.append(folder)
    run = RunRecord(tmp_path / "run", RunConfig(model="mlp").to_dict(),
                    {"model": "mlp", "discovered_density": 0.1, "test_acc": 0.9, "cost_flops": 0.5, "cost_epochs": 3},
                    [])
    (row,) = discovery_rows([run], sweeps)
    assert row["sweep_best"] == 0.90
    adamw = RunRecord(tmp_path / "run2", {**RunConfig(model="mlp").to_dict(), "train": {"optimizer": "adamw"}},
                      {"model": "mlp", "discovered_density": 0.1, "test_acc": 0.9, "cost_flops": 0.5,
                       "cost_epochs": 3}, [])
    (row,) = discovery_rows([adamw], sweeps)
    assert row["sweep_best"] == 0.99


def test_a_text_run_is_scored_against_the_sweep_of_its_context(tmp_path):
    """Of sweeps at the default context (unset) and at context 64, a run with ``--context 128`` (the default written
    out) is scored against the first, a run with ``--context 64`` against the second; claims keep them apart."""
    from pwmpr.compare import discovery_rows
    from pwmpr.compare.records import RunRecord
    from pwmpr.config import RunConfig

    sweeps = []
    for context, acc in ((None, 0.30), (64, 0.25)):
        folder = tmp_path / f"ctx{context}"
        folder.mkdir()
        cfg = SweepConfig(densities=[0.1], base=RunConfig(model="gpt-mini", data="pydoc-text", context=context))
        (folder / "sweep.json").write_text(json.dumps(cfg.to_dict()))
        point = folder / "runs" / "d0.1-s0"
        point.mkdir(parents=True)
        (point / "config.json").write_text(json.dumps(cfg.point_config(0.1, 0).to_dict()))
        (point / "summary.json").write_text(json.dumps(
            {"model": "gpt-mini", "data": "pydoc-text", "discovered_density": 0.1, "test_acc": acc, "val_acc": acc,
             "cost_flops": 0.1, "cost_epochs": 1.0}))
        sweeps.append(folder)
    summary = {"model": "gpt-mini", "discovered_density": 0.1, "test_acc": 0.3, "cost_flops": 0.5, "cost_epochs": 3}
    runs = [RunRecord(tmp_path / f"run{c}", RunConfig(model="gpt-mini", data="pydoc-text", context=c).to_dict(),
                      summary, []) for c in (128, 64)]
    assert [row["sweep_best"] for row in discovery_rows(runs, sweeps)] == [0.30, 0.25]
    assert [r.setting for r in runs] == [("gpt-mini", "pydoc-text"), ("gpt-mini", "pydoc-text@64")]
    assert runs[0].group_key() == RunRecord(tmp_path, RunConfig(model="gpt-mini", data="pydoc-text").to_dict(),
                                            summary, []).group_key()


def test_the_same_sweep_rerun_on_a_folder_from_an_older_pwmpr_continues_it(tmp_path):
    """A sweep folder whose base config differs only where nothing trains differently (the lr written out, shrink
    settings with no shrink stage) is the same sweep: running the same command keeps its finished points."""
    out = tmp_path / "sweep"
    command = ["sweep", *TINY, "--densities", "1", "--out", str(out)]
    assert runner.invoke(app, command).exit_code == 0
    config = json.loads((out / "sweep.json").read_text())
    config["base"]["train"]["lr"] = 0.1
    config["base"]["shrink"]["max_steps"] = 10
    config["base"].update(version=4, final_init="continue")  # the start of a final training one-shot points lack
    del config["base"]["stop"]["plateau_resolve"]  # and the stop settings of growth they do not have
    (out / "sweep.json").write_text(json.dumps(config))
    point = out / "runs" / "d1-s0" / "config.json"
    written = json.loads(point.read_text())
    del written["stop"]["plateau_resolve"]
    point.write_text(json.dumps({**written, "version": 4, "final_init": "continue"}))
    stamp = (out / "runs" / "d1-s0" / "summary.json").stat().st_mtime_ns
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    assert (out / "runs" / "d1-s0" / "summary.json").stat().st_mtime_ns == stamp
    config["base"]["train"]["lr"] = 0.05  # another learning rate is another sweep
    (out / "sweep.json").write_text(json.dumps(config))
    result = runner.invoke(app, command)
    assert result.exit_code == 2 and "is not empty" in result.output


def test_a_sweep_loads_its_data_once_and_ctrl_c_is_one_line(tmp_path, monkeypatch):
    """Every point trains on the data loaded once; a Ctrl-C in the second point exits 130 with one line."""
    import pwmpr.data
    import pwmpr.runner
    from pwmpr.train import Trainer

    loads = []
    real = pwmpr.data.load_data

    def counting(*args, **kwargs):
        loads.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(pwmpr.data, "load_data", counting)
    monkeypatch.setattr(pwmpr.runner, "load_data", counting)
    out = tmp_path / "sweep"
    result = runner.invoke(app, ["sweep", *TINY, "--densities", "0.5,1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert loads == ["digits"]
    calls = []
    train = Trainer.train

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return train(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train", interrupted)
    result = runner.invoke(app, ["sweep", *TINY, "--densities", "0.5,1", "--out", str(tmp_path / "other")])
    assert result.exit_code == 130
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("interrupted"), result.output
    assert (tmp_path / "other" / "runs" / "d0.5-s0" / "summary.json").is_file()


def test_compare_and_resume_survive_a_damaged_sweep_summary(tmp_path):
    """A sweep's curve and knee are computed from its points: a summary.json without knee or model, or with a knee
    density of 0, changes nothing; a truncated point summary.json is rewritten by --resume from its checkpoint."""
    from pwmpr.compare import discovery_rows
    from pwmpr.compare.records import read_run

    sweep = tmp_path / "sweep"
    assert runner.invoke(app, ["sweep", *TINY, "--densities", "0.5,1", "--out", str(sweep)]).exit_code == 0
    run = tmp_path / "run"
    grow = ["grow", "--data", "digits", "--model", "mlp", "--phase-epochs", "1", "--final-epochs", "1",
            "--max-phases", "1", "--no-tau-core", "--batch-size", "64", "-q", "--out", str(run)]
    assert runner.invoke(app, grow).exit_code == 0
    (want,) = discovery_rows([read_run(run)], [sweep])
    good = json.loads((sweep / "summary.json").read_text())
    for damage in ({"knee": None}, {"model": None}, {"knee": {"density": 0, "test_acc": 0.5}}):
        (sweep / "summary.json").write_text(json.dumps({k: v for k, v in {**good, **damage}.items()
                                                        if v is not None}))
        assert discovery_rows([read_run(run)], [sweep]) == [want]
    point = sweep / "runs" / "d1-s0" / "summary.json"
    text = point.read_text()
    point.write_text(text[: len(text) // 2])
    result = runner.invoke(app, ["sweep", "--resume", str(sweep), "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(point.read_text()) == json.loads(text)
    assert json.loads((sweep / "summary.json").read_text())["curve"] == good["curve"]


def test_ctrl_c_while_the_digits_csv_is_parsed_arrives_after_the_parse(monkeypatch):
    """pandas turns a KeyboardInterrupt inside its parser into a ParserError: the read holds SIGINT back, so the
    parse finishes and the Ctrl-C is then raised as itself."""
    import os
    import signal
    import time

    import numpy as np
    import pandas as pd

    from pwmpr.data import offline

    finished = []

    def read_csv(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # Python would raise here, inside the parse, if the signal were not held
        finished.append(True)
        return pd.DataFrame(np.zeros((2, 785)))

    monkeypatch.setattr(pd, "read_csv", read_csv)
    with pytest.raises(KeyboardInterrupt):
        offline._read_mnist5k()
    assert finished == [True]
