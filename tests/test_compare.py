"""`pwmpr compare`: numbers equal those in the run folders, seeds grouped, claims by hand, missing runs, bad input."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pwmpr.cli.app import app
from pwmpr.compare import compare, read_run
from pwmpr.errors import PwmprError

runner = CliRunner()


def _fake_run(root: Path, name: str, *, method: str, seed: int, summary: dict, phases: list[dict],
              rule: str = "pwmp", options: dict | None = None, final: dict | None = None) -> Path:
    """A run folder as the runner writes it, with hand-picked numbers."""
    run = root / name
    run.mkdir(parents=True)
    config = {"version": 1, "method": method, "model": "mlp", "data": "mnist5k", "seed": seed, "device": "cpu",
              "growth": {"rule": rule, "seed_density": 0.01}, "options": options or {}}
    rows = [{"stage": "phase", "tau_core": {"ratio": p.pop("tau", 0.5)}, **p} for p in phases]
    if final is not None:
        rows.append({"stage": "final", **final})
    base = {"method": method, "seed": seed, "stop_reason": "done", "wall_time": 10.0 + seed,
            "dense_reference_epochs": 10, "tau_core": {"ratio": 0.3}}
    (run / "config.json").write_text(json.dumps(config))
    (run / "summary.json").write_text(json.dumps({**base, **summary}))
    (run / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def _pwmpr(root, rule, seed, acc, val_accs, taus, density=0.04, cost=(0.1, 1.5)):
    densities = [0.01, 0.0125, 0.015625, 0.01953125, 0.0244140625][: len(val_accs)]
    phases = [{"density": d, "val_acc": v, "tau": t} for d, v, t in zip(densities, val_accs, taus, strict=True)]
    return _fake_run(root, f"pwmpr-{rule}-s{seed}", method="pwmpr", rule=rule, seed=seed, phases=phases,
                     summary={"discovered_density": density, "test_acc": acc, "cost_flops": cost[0],
                              "cost_epochs": cost[1]})


def _imp(root, seed, levels):
    """``levels``: (density, val_acc, test_acc, cost_flops, cost_epochs) per level."""
    phases = [{"density": d, "val_acc": v, "test_acc": t, "cost_flops": cf, "cost_epochs": ce}
              for d, v, t, cf, ce in levels]
    last = levels[-1]
    return _fake_run(root, f"imp-s{seed}", method="imp", seed=seed, phases=phases, options={"variant": "lr-rewind"},
                     summary={"discovered_density": last[0], "test_acc": last[2], "cost_flops": last[3],
                              "cost_epochs": last[4]})


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    out = []
    for s, acc in enumerate((0.90, 0.92, 0.94)):
        out.append(_pwmpr(tmp_path, "pwmp", s, acc, [0.80, 0.85, 0.88], [0.20, 0.22, 0.24]))
        out.append(_pwmpr(tmp_path, "random", s, acc - 0.02, [0.78, 0.86, 0.85], [0.30, 0.30, 0.30]))
        out.append(_pwmpr(tmp_path, "pwmp-topk", s, acc - 0.01, [0.80, 0.84, 0.87], [0.10, 0.12, 0.30]))
    # IMP: best ticket by validation accuracy is level 1 (density 0.8) for seed 0 and level 2 for seed 1.
    out.append(_imp(tmp_path, 0, [(1.0, 0.95, 0.950, 1.0, 1.0), (0.8, 0.97, 0.960, 1.8, 2.0),
                                  (0.04, 0.93, 0.930, 3.5, 4.0)]))
    out.append(_imp(tmp_path, 1, [(1.0, 0.95, 0.940, 1.0, 1.0), (0.8, 0.95, 0.950, 1.8, 2.0),
                                  (0.04, 0.96, 0.935, 3.5, 4.0)]))
    out.append(_fake_run(tmp_path, "dense-s0", method="dense", seed=0, phases=[{"density": 1.0, "val_acc": 0.95}],
                         summary={"discovered_density": 1.0, "test_acc": 0.95, "cost_flops": 1.0, "cost_epochs": 1.0}))
    return out


def test_table_numbers_equal_the_run_folders(runs, tmp_path):
    result = compare(runs, tmp_path / "cmp", plots=False)
    rows = {r["group"]: r for r in result.rows}
    assert list(rows) == ["pwmpr/pwmp", "pwmpr/pwmp-topk", "pwmpr/random", "imp/lr-rewind", "dense"]
    pw = rows["pwmpr/pwmp"]
    assert pw["n_seeds"] == 3 and pw["seeds"] == "0 1 2"
    assert pw["test_acc"] == pytest.approx(0.92) and pw["test_acc_std"] == pytest.approx(0.02)
    assert pw["wall_time"] == pytest.approx(11.0) and pw["wall_time_std"] == pytest.approx(1.0)
    assert pw["cost_flops"] == pytest.approx(0.1) and pw["cost_epochs"] == 1.5 and pw["tau_core_ratio"] == 0.3
    # The CSV holds the same numbers at full precision, each one equal to the mean over the summaries.
    with open(tmp_path / "cmp" / "compare.csv") as fh:
        table = {r["group"]: r for r in csv.DictReader(fh)}
    for group, row in rows.items():
        folders = [read_run(p) for p in row["runs"].split(";")]
        for col, key in (("test_acc", "test_acc"), ("density", "discovered_density"), ("cost_flops", "cost_flops"),
                         ("cost_epochs", "cost_epochs"), ("wall_time", "wall_time")):
            assert float(table[group][col]) == statistics.fmean(r.summary[key] for r in folders), (group, col)
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| pwmpr/pwmp | 3 | 0.0400 | 92.00 ± 2.00 |" in md
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"][0]["group"] == "pwmpr/pwmp"


def test_claims_by_hand(runs, tmp_path):
    claims = {c.name: c for c in compare(runs, None).claims["mlp on mnist5k"]}
    c = claims["PWMPR training cost / dense"]
    # 1.5x in epochs (inside 1.25-1.75x), 0.1x in FLOPs (outside).
    assert c.verdict == "partly holds" and c.values["cost_flops"]["mean"] == pytest.approx(0.1)
    # IMP's level nearest PWMPR's density 0.04 is level 2: 3.5x FLOPs, 4.0x epochs, both inside 3-4x.
    c = claims["IMP-C training cost / dense [imp/lr-rewind]"]
    assert c.verdict == "holds" and c.values["level"] == 2
    assert c.values["cost_flops"]["mean"] == 3.5 and c.values["cost_epochs"]["mean"] == 4.0
    # Best tickets: seed 0 level 1 (test 0.960), seed 1 level 2 (test 0.935): mean 0.9475; PWMPR 0.92: +2.75 pt.
    c = claims["Accuracy gap PWMPR vs IMP's best ticket [imp/lr-rewind]"]
    assert c.values["gap_pt"] == pytest.approx(2.75) and c.verdict == "does not hold"
    # At PWMPR's density (0.04, level 2) IMP has (0.930 + 0.935) / 2 = 0.9325: +1.25 pt.
    assert c.values["matched_level"] == 2 and c.values["matched_gap_pt"] == pytest.approx(1.25)
    assert [t["level"] for t in c.values["tickets"]] == [1, 2]
    # Random growth: matched densities 0.01, 0.0125, 0.015625; differences 0.02, -0.01, 0.03 (mean +1.33 pt).
    c = claims["PWMPR vs random growth below 20% density"]
    assert c.values["n_matched"] == 3 and c.values["wins"] == 2
    assert c.values["mean_diff_pt"] == pytest.approx((0.02 - 0.01 + 0.03) / 3 * 100) and c.verdict == "holds"
    assert c.values["final_test_diff_pt"] == pytest.approx(2.0)
    assert c.values["per_seed_diff_pt"]["mean"] == pytest.approx(4 / 3) and c.values["per_seed_diff_pt"]["std"] == 0
    # Tau-core: sampled 0.20/0.22/0.24 vs top-k 0.10/0.12/0.30: +0.1, +0.1, -0.06.
    c = claims["tau-core of sampled vs top-k PWMP growth"]
    assert c.values["mean_diff"] == pytest.approx((0.1 + 0.1 - 0.06) / 3) and c.values["larger"] == 2
    assert c.verdict == "holds"


def test_verdicts_weigh_the_spread_over_seeds(tmp_path):
    """A difference smaller than its standard error over seeds is "not distinguishable", and so is one seed."""
    paths = []
    # PWMPR minus random, per seed, over the 3 matched densities: +2.0, -1.0, +0.5 points (mean +0.5, sem 0.87).
    for s, d in enumerate((0.02, -0.01, 0.005)):
        paths.append(_pwmpr(tmp_path, "pwmp", s, 0.9, [0.80, 0.85, 0.88], [0.2, 0.2, 0.2]))
        paths.append(_pwmpr(tmp_path, "random", s, 0.9, [0.80 - d, 0.85 - d, 0.88 - d], [0.2, 0.2, 0.2]))
    claims = {c.name: c for c in compare(paths, None).claims["mlp on mnist5k"]}
    c = claims["PWMPR vs random growth below 20% density"]
    assert c.values["per_seed_diff_pt"]["mean"] == pytest.approx(0.5)
    assert c.values["mean_diff_pt"] > 0 and c.verdict == "not distinguishable"
    # The same with every seed +1 point: the spread is 0, so the +1 point holds.
    tight = tmp_path / "tight"
    paths = []
    for s in range(3):
        paths.append(_pwmpr(tight, "pwmp", s, 0.9, [0.80, 0.85, 0.88], [0.2, 0.2, 0.2]))
        paths.append(_pwmpr(tight, "random", s, 0.9, [0.79, 0.84, 0.87], [0.2, 0.2, 0.2]))
    c = {c.name: c for c in compare(paths, None).claims["mlp on mnist5k"]}["PWMPR vs random growth below 20% density"]
    assert c.verdict == "holds"
    # One seed: no spread to weigh, whatever the difference.
    c = {c.name: c for c in compare(paths[:2], None).claims["mlp on mnist5k"]}[
        "PWMPR vs random growth below 20% density"]
    assert c.verdict == "not distinguishable" and "one seed" in c.measured


def test_cost_verdict_across_a_bound_is_not_distinguishable(tmp_path):
    """PWMPR cost 1.2x and 1.4x epochs over two seeds: mean 1.3, s.e. 0.1, so 1.3 ± 0.1 crosses 1.25."""
    paths = [_pwmpr(tmp_path, "pwmp", s, 0.9, [0.8, 0.85], [0.2, 0.2], cost=(1.5, e))
             for s, e in enumerate((1.2, 1.4))]
    c = {c.name: c for c in compare(paths, None).claims["mlp on mnist5k"]}["PWMPR training cost / dense"]
    assert c.values["cost_epochs"]["mean"] == pytest.approx(1.3) and c.verdict == "not distinguishable"


def test_hybrid_and_shrink_runs_are_their_own_groups_and_never_judged_as_plain_pwmpr(tmp_path):
    """Runs with --zeta or --shrink are variants of their own; the paper's claims read plain PWMPR only, and the
    shrink stage's rows are not growth phases."""
    paths = []
    for s in range(2):
        paths.append(_pwmpr(tmp_path, "pwmp", s, 0.9, [0.8, 0.85], [0.2, 0.2], cost=(0.5, 1.5)))
        hybrid = _pwmpr(tmp_path / "hyb", "pwmp", s, 0.9, [0.8, 0.85], [0.2, 0.2], cost=(0.5, 3.0))
        cfg = json.loads((hybrid / "config.json").read_text())
        cfg["growth"]["zeta"] = 0.3
        cfg["shrink"] = {"enabled": True}
        (hybrid / "config.json").write_text(json.dumps(cfg))
        rows = [json.loads(line) for line in (hybrid / "history.jsonl").read_text().splitlines()]
        rows.append({"stage": "phase", "density": 0.008, "val_acc": 0.84, "shrink": {"step": 1, "kept": True}})
        (hybrid / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(hybrid)
    result = compare(paths, None)
    labels = [g.label for g in result.groups]
    assert labels == ["pwmpr/pwmp", "pwmpr/pwmp+zeta0.3+shrink"]
    hyb = result.groups[1]
    assert all("shrink" not in r for run in hyb.runs for r in run.phases()) and len(hyb.runs[0].phases()) == 2
    c = {c.name: c for c in result.claims["mlp on mnist5k"]}["PWMPR training cost / dense"]
    assert c.values["group"] == "pwmpr/pwmp" and c.values["cost_epochs"]["mean"] == 1.5 and c.verdict == "partly holds"


def test_missing_runs_are_not_measured(runs, tmp_path):
    dense_only = [p for p in runs if p.name.startswith("dense")]
    claims = compare(dense_only, None).claims["mlp on mnist5k"]
    assert len(claims) == 5 and all(c.verdict == "not measured" for c in claims)
    assert all(c.measured.startswith("not measured") for c in claims)


def test_bad_input_is_refused(tmp_path, runs):
    with pytest.raises(PwmprError, match="not a run folder"):
        read_run(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(PwmprError, match="has no summary.json"):
        read_run(tmp_path / "half")
    with pytest.raises(PwmprError, match="given twice"):
        compare([runs[0], runs[0]], None)


def test_cli_compare_prints_the_table_and_writes_files(runs, tmp_path):
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["compare", *map(str, runs), "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "pwmpr/pwmp" in result.output and "[imp/lr-rewind]" in result.output and "holds" in result.output
    for name in ("compare.md", "compare.csv", "compare.json", "acc_vs_density.png", "acc_vs_cost.png"):
        assert (out / name).is_file(), name
    assert (out / "acc_vs_cost.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_compare_bad_input_is_one_line_and_exit_2(tmp_path):
    result = runner.invoke(app, ["compare", str(tmp_path / "missing"), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 2 and "error: " in result.output and "not a run folder" in result.output
    assert "Traceback" not in result.output
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.json").write_text("{}")
    result = runner.invoke(app, ["compare", str(tmp_path / "unfinished")])
    assert result.exit_code == 2 and "has no summary.json" in result.output


def test_compare_reads_real_run_folders(tmp_path):
    tiny = ["--data", "digits", "--model", "mlp", "--epochs", "1", "--batch-size", "64", "--max-train", "300",
            "--no-tau-core", "-q"]
    for seed in ("0", "1"):
        r = runner.invoke(app, ["baseline", "imp", *tiny, "--levels", "1", "--seed", seed, "--out",
                                str(tmp_path / f"imp{seed}")])
        assert r.exit_code == 0, r.output
    assert runner.invoke(app, ["baseline", "dense", *tiny, "--out", str(tmp_path / "dense")]).exit_code == 0
    result = compare([tmp_path / "imp0", tmp_path / "imp1", tmp_path / "dense"], tmp_path / "cmp", plots=False)
    rows = {r["group"]: r for r in result.rows}
    assert set(rows) == {"imp/lr-rewind", "dense"} and rows["imp/lr-rewind"]["n_seeds"] == 2
    summaries = [json.loads((tmp_path / f"imp{s}" / "summary.json").read_text()) for s in (0, 1)]
    assert rows["imp/lr-rewind"]["test_acc"] == statistics.fmean(s["test_acc"] for s in summaries)
    assert rows["imp/lr-rewind"]["test_acc_std"] == statistics.stdev(s["test_acc"] for s in summaries)
    assert rows["imp/lr-rewind"]["cost_flops"] == pytest.approx(1.8)  # 1 + 0.8 dense runs of 1 epoch
    dense = json.loads((tmp_path / "dense" / "summary.json").read_text())
    assert rows["dense"]["test_acc"] == dense["test_acc"] and rows["dense"]["cost_epochs"] == 1.0
    levels = result.groups[0].levels()
    assert [lv["density"].mean for lv in levels] == [1.0, 0.8]


def test_runs_of_the_same_settings_are_one_group_however_their_config_was_written(tmp_path):
    """A default run (lr not given), one with --lr 0.1, and a version-1 folder of the same settings (no optimizer,
    no shrink alpha) train alike, so they are seeds of one group; another learning rate is another group."""
    from pwmpr.compare.records import RunRecord
    from pwmpr.config import RunConfig

    default = RunConfig().to_dict()
    explicit = RunConfig().to_dict()
    explicit["train"]["lr"] = 0.1
    old = RunConfig().to_dict()
    old["version"] = 1
    del old["train"]["optimizer"], old["shrink"]["alpha"]
    old["train"]["lr"] = 0.1
    other = RunConfig().to_dict()
    other["train"]["lr"] = 0.05
    ancient = {**old, "stop": {k: v for k, v in old["stop"].items() if k not in ("rule", "tol", "alpha")}}
    keys = [RunRecord(tmp_path, cfg, {}, []).group_key() for cfg in (default, explicit, old, other, ancient)]
    assert keys[0] == keys[1] == keys[2] != keys[3]
    assert keys[4] != keys[0]  # written before the stop rules had names: it stopped by another rule


def test_the_start_of_final_training_groups_only_runs_that_have_one(tmp_path):
    """A baseline written when `continue` was the default (version 4) and one written today train alike: one
    group; a PWMPR run of each time starts its final training from other weights: two groups."""
    from pwmpr.compare.records import RunRecord
    from pwmpr.config import RunConfig

    def keys(method):
        today = RunConfig(method=method).to_dict()
        old = {**{k: v for k, v in today.items() if k != "final_init"}, "version": 4}
        old["stop"] = {k: v for k, v in today["stop"].items() if k != "plateau_resolve"}  # as version 4 wrote it
        return [RunRecord(tmp_path, cfg, {}, []).group_key() for cfg in (today, old)]

    for method in ("imp", "dense", "oneshot", "rigl"):
        today, old = keys(method)
        assert today == old, method
    today, old = keys("pwmpr")
    assert today != old
    no_final = RunConfig(final_epochs=0).to_dict()  # a PWMPR run without a final training has no start either
    old = {**{k: v for k, v in no_final.items() if k != "final_init"}, "version": 4}
    assert RunRecord(tmp_path, no_final, {}, []).group_key() == RunRecord(tmp_path, old, {}, []).group_key()
    unknown = {**RunConfig().to_dict(), "method": "a-method-of-another-pwmpr"}  # still read in today's form
    assert '"checkpoint_minutes"' not in RunRecord(tmp_path, unknown, {}, []).group_key()


def test_the_plateau_window_groups_only_runs_whose_growth_it_stops(tmp_path):
    """A baseline written before the plateau window could widen (version 5, no such key) and one written today
    with the window widened train alike: one group; a PWMPR run of each time stops growth by another test: two
    groups, unless it has no plateau test at all (--plateau-tol 0). With today's default, the last points, a run
    of either time is in one group."""
    from pwmpr.compare.records import RunRecord
    from pwmpr.config import RunConfig

    def keys(**fields):
        today = RunConfig(**fields).to_dict()
        old = {**today, "version": 5, "stop": {k: v for k, v in today["stop"].items() if k != "plateau_resolve"}}
        return [RunRecord(tmp_path, cfg, {}, []).group_key() for cfg in (today, old)]

    for method in ("imp", "dense", "oneshot", "rigl", "set"):
        today, old = keys(method=method, stop={"plateau_resolve": True})
        assert today == old, method
    today, old = keys(stop={"plateau_resolve": True})
    assert today != old
    today, old = keys(stop={"rule": "gain", "plateau_tol": 0.0, "plateau_resolve": True})
    assert today == old
    today, old = keys()
    assert today == old


def test_the_growth_rule_groups_only_runs_that_grow_by_it(tmp_path):
    """A baseline or sweep point written when `pwmp` was the default growth rule and one written today train alike:
    one group; a PWMPR run of each time grows by another rule: two groups."""
    from pwmpr.compare.records import RunRecord
    from pwmpr.config import RunConfig

    def keys(**fields):
        today = RunConfig(**fields).to_dict()
        old = {**today, "growth": {**today["growth"], "rule": "pwmp"}}
        return [RunRecord(tmp_path, cfg, {}, []).group_key() for cfg in (today, old)]

    assert RunConfig().growth.rule != "pwmp"
    for method in ("imp", "dense", "oneshot", "rigl", "set"):
        today, old = keys(method=method)
        assert today == old, method
    today, old = keys()
    assert today != old
