"""The held-out discovery benchmark (bench/settings/discovery-heldout.json): its pairs, data, model and report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from benchfiles import load_bench

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SETTINGS = BENCH / "settings"


def _bench(name):
    """The bench script ``bench/<name>.py`` as a module."""
    return load_bench(name)


def _pair_parts(pair: str) -> tuple[str, str, str]:
    out = subprocess.run(["bash", "-c", 'source bench/_jobs.sh; pair_parts "$1"; echo "$data|$model|$label"', "_",
                          pair], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    data, model, label = out.strip().split("|")
    return data, model, label


def _settings(name: str) -> dict:
    return json.loads((SETTINGS / f"{name}.json").read_text())["settings"]


@pytest.mark.parametrize("pair, want", [
    ("mnist5k:mlp", ("mnist5k", "mlp", "mnist5k-mlp")),
    ("digits::discovery_models:relu_mlp", ("digits", "discovery_models:relu_mlp", "digits-relu_mlp")),
    ("npz:bench/out/h/data/tabular.npz::mlp", ("npz:bench/out/h/data/tabular.npz", "mlp", "tabular-mlp")),
    ("npz:/data/x.npz::pkg.models:net", ("npz:/data/x.npz", "pkg.models:net", "x-net")),
])
def test_a_pair_names_its_data_and_model_and_its_folder(pair, want):
    assert _pair_parts(pair) == want


@pytest.mark.parametrize("pairs, why", [
    (["npz:/x/y.npz:mlp"], "more than one ':'"),
    (["digits::a:relu_mlp", "digits::b:relu_mlp"], "share the folder 'digits-relu_mlp'"),
    ([":mlp"], "must name a data set and a model"),
    (["digits:"], "must name a data set and a model"),
])
def test_a_pair_that_does_not_parse_or_shares_a_folder_is_refused(pairs, why):
    run = subprocess.run(["bash", "-c", 'source bench/_jobs.sh; check_pairs "$@"; echo parsed', "_", *pairs],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 2 and "parsed" not in run.stdout
    assert run.stderr.startswith("error: ") and why in run.stderr


def test_the_held_out_pairs_are_none_of_the_tuned_benchmarks_and_both_scripts_read_the_same():
    def labels(name):
        return {_pair_parts(p)[2] for p in _settings(name)["PAIRS"]["value"].split()}

    tuned, first, second = labels("discovery"), labels("discovery-heldout"), labels("discovery-heldout2")
    assert len(first) == len(second) == 3 and not first & tuned and not second & (tuned | first)
    held = _settings("discovery-heldout")
    replay = _settings("stop_replay-heldout")
    assert replay["PAIRS"]["value"] == held["PAIRS"]["value"]
    assert replay["DATA_PREP"]["value"] == held["DATA_PREP"]["value"]
    assert replay["SWEEPS"]["value"] == held["OUT"]["value"]
    assert _settings("stop_replay")["PAIRS"]["value"] == _settings("discovery")["PAIRS"]["value"]


def test_the_synthetic_sets_are_the_same_every_time_and_an_existing_file_is_kept(tmp_path):
    for d in ("a", "b"):
        subprocess.run([sys.executable, "bench/discovery_data.py", str(tmp_path / d)], cwd=ROOT, check=True,
                       capture_output=True)
    a, b = np.load(tmp_path / "a" / "tabular.npz"), np.load(tmp_path / "b" / "tabular.npz")
    assert a["x"].shape == (20_000, 40) and a["x"].dtype == np.float32
    assert np.array_equal(a["x"], b["x"]) and np.array_equal(a["y"], b["y"])
    counts = np.bincount(a["y"])
    assert len(counts) == 6 and counts.min() > 0.95 * len(a["y"]) / 6  # balanced classes 0..5
    g, h = np.load(tmp_path / "a" / "gratings.npz"), np.load(tmp_path / "b" / "gratings.npz")
    assert g["x"].shape == (12_000, 1, 16, 16) and np.array_equal(g["x"], h["x"]) and np.array_equal(g["y"], h["y"])
    assert np.bincount(g["y"]).tolist() == [1_500] * 8
    assert list(tmp_path.glob("*/*.tmp.npz")) == []
    stamp = (tmp_path / "a" / "tabular.npz").stat().st_mtime_ns
    out = subprocess.run([sys.executable, "bench/discovery_data.py", str(tmp_path / "a")], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    assert out == "" and (tmp_path / "a" / "tabular.npz").stat().st_mtime_ns == stamp


def test_the_tabular_set_reads_as_pwmpr_data_with_a_validation_set_of_thousands(tmp_path):
    from pwmpr.data import load_data

    subprocess.run([sys.executable, "bench/discovery_data.py", str(tmp_path)], cwd=ROOT, check=True,
                   capture_output=True)
    bundle = load_data(f"npz:{tmp_path / 'tabular.npz'}")
    assert bundle.num_classes == 6 and bundle.input_shape == (40,)
    assert len(bundle.val.y) >= 1_500 and len(bundle.test.y) == 4_000


def test_the_held_out_model_with_a_functional_relu_grows_in_every_layer(tmp_path):
    import pwmpr

    models = _bench("discovery_models")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(600, 1, 8, 8, generator=gen)
    y = (x.flatten(1)[:, :10].argmax(1)).long()
    model = models.relu_mlp(10, (1, 8, 8))
    res = pwmpr.grow_module(model, (x[:500], y[:500]), val=(x[500:], y[500:]), out=tmp_path / "run",
                            phase_epochs=1, final_epochs=1, stop={"max_phases": 2}, seed_density=0.05,
                            device="cpu", seed=0)
    layers = [n for n, _ in model.named_parameters() if n.endswith("weight")]
    assert sorted(res.masks) == sorted(layers) and len(layers) == 4  # every Linear, through torch.relu
    history = [json.loads(line) for line in (res.run_dir / "history.jsonl").read_text().splitlines()]
    phases = [r for r in history if r.get("stage") == "phase"]
    assert len(phases) == 2 and phases[1]["density"] > phases[0]["density"]


def _report(note: str = "") -> str:
    """A report as bench/discovery.py writes it, on two hand-made runs of each of two variants."""
    from pwmpr.discovery import score

    discovery = _bench("discovery")
    sweep = {"knee": {"density": 0.2, "test_acc": 0.9}, "best": {"density": 1.0, "test_acc": 0.905},
             "dense": {"test_acc": 0.905}, "curve": [{"density": 0.2, "test_acc": 0.9}, {"density": 1.0,
                                                                                         "test_acc": 0.905}]}
    rows = []
    for rule, density in ((discovery.default_rule(), 0.3), ("gain-guarded", 0.05)):
        for seed in (0, 1):
            summary = {"discovered_density": density, "test_acc": 0.9, "cost_flops": 0.5, "cost_epochs": 40,
                       "stop_reason": "plateau"}
            rows.append({"pair": "a-mlp", "rule": rule, "seed_density": 0.05, "seed": seed, "settings": {},
                         **score(summary, sweep, [{"stage": "phase", "density": 0.04, "cost_flops": 3.0}])})
    text = discovery.render(rows, {"a-mlp": sweep}, "bash bench/discovery.sh", 60.0)
    text += "\n".join(discovery.together(rows, rows, "itself")) + "\n"
    if note:
        head, _, rest = text.partition("\n\n")
        text = f"{head}\n\n**Note:** {note}\n\n{rest}"
    return text


def test_the_summary_is_the_headline_of_the_report():
    text = _report(note="made in two sittings")
    summary = _bench("discovery").summary(text)
    assert summary.startswith("<!-- written by a bench script") and "Command: `bash bench/discovery.sh`" in summary
    assert "**Note:** made in two sittings" in summary
    assert "A run is a **hit**" in summary and "| variant | runs | hits |" in summary
    assert summary.count("Verdict (computed)") == 2 and "| variant | hits here |" in summary
    assert "Per data/model pair" not in summary and "Sweeps (one-shot" not in summary
    assert "In one file only" not in summary and summary.endswith(".\n") and "\n\n\n" not in summary


def test_a_report_is_quoted_only_where_a_document_has_its_markers(tmp_path):
    results = _bench("_results")
    marked = tmp_path / "marked.md"
    marked.write_text("a\n<!-- x:begin -->\nold\n<!-- x:end -->\nb\n")
    plain = tmp_path / "plain.md"
    plain.write_text("nothing here\n")
    assert results.quote_where_marked(marked, "x", "new\n") is True
    assert results.quote_where_marked(plain, "x", "new\n") is False
    assert marked.read_text() == "a\n<!-- x:begin -->\nnew\n<!-- x:end -->\nb\n"
    assert plain.read_text() == "nothing here\n"


def test_only_a_report_in_bench_results_is_quoted_into_the_docs(tmp_path, monkeypatch):
    results = _bench("_results")
    monkeypatch.setattr(results, "ROOT", tmp_path)
    (tmp_path / "bench" / "results").mkdir(parents=True)
    doc = tmp_path / "bench" / "RESULTS.md"
    doc.write_text("<!-- r:begin -->\nold\n<!-- r:end -->\n<!-- r-summary:begin -->\nold\n<!-- r-summary:end -->\n")
    smoke = results.quote_report(tmp_path / "smoke" / "r.md", {"r": "new\n"}, docs=("bench/RESULTS.md",))
    assert smoke == [] and "new" not in doc.read_text()
    got = results.quote_report(tmp_path / "bench" / "results" / "r.md", {"r": "new\n", "r-summary": "short\n",
                                                                           "other": "x\n"}, docs=("bench/RESULTS.md",))
    assert got == ["bench/RESULTS.md:r", "bench/RESULTS.md:r-summary"]
    assert doc.read_text() == ("<!-- r:begin -->\nnew\n<!-- r:end -->\n<!-- r-summary:begin -->\nshort\n"
                               "<!-- r-summary:end -->\n")


@pytest.mark.slow
def test_the_held_out_benchmark_runs_end_to_end_on_its_own_pairs(tmp_path):
    out = tmp_path / "h"
    env = {**os.environ, "SETTINGS": "discovery-heldout", "OUT": str(out), "RESULTS": str(out / "report.md"),
           "DATA_PREP": f"python3 bench/discovery_data.py {out / 'data'}",
           "PAIRS": f"digits::discovery_models:relu_mlp npz:{out / 'data' / 'tabular.npz'}::mlp",
           "SEEDS": "0", "SEED_DENSITIES": "0.05", "PHASE_EPOCHS": "1", "EPOCHS": "1", "DENSITIES": "0.05,1",
           "IMP_LEVELS": "1", "VARIANTS": "explore", "MAX_TRAIN": "300"}
    subprocess.run(["bash", "bench/discovery.sh"], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    report = json.loads((out / "report.json").read_text())
    assert sorted({r["pair"] for r in report["rows"]}) == ["digits-relu_mlp", "tabular-mlp"]
    assert all(r["hit"] is not None for r in report["rows"])  # every pair had its sweep and its IMP run
    # Each pair's sweep again under --init-scale fan-in (FANIN_SWEEP=1, the published setting), set beside it.
    scaled = json.loads((out / "digits-relu_mlp" / "sweep-fanin" / "summary.json").read_text())
    assert scaled["complete"] and json.loads((out / "digits-relu_mlp" / "sweep-fanin" / "sweep.json").read_text())[
        "base"]["growth"]["init_scale"] == "fan-in"
    assert "| digits-relu_mlp |" in (out / "report.md").read_text().split("scaled to its fan-in (`pwmpr sweep")[1]
    # A run interrupted after its first phase resumes through the queue (grow --trust-code --resume, the model a
    # module:function): its summary gone, the script runs it again from its checkpoint and scores it.
    run = out / "digits-relu_mlp" / "pwmpr-explore-sd0.05-s0"
    assert list(run.glob("checkpoints/phase-*.safetensors"))
    (run / "summary.json").unlink()
    subprocess.run(["bash", "bench/discovery.sh"], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    assert (run / "summary.json").is_file()  # without --trust-code the resume of a module:function model fails


def _hits(rule: str, hits: int, runs: int, resolve: bool = False) -> list[dict]:
    settings = {"final_init": "shrink-perturb", "growth": "pwmp", "stop": "plateau", "plateau_tol": 0.005,
                "plateau_resolve": resolve}
    return [{"rule": rule, "hit": i < hits, "settings": settings} for i in range(runs)]


def test_the_variants_are_added_up_over_both_benchmarks_and_the_verdict_names_the_most_hits():
    discovery = _bench("discovery")
    default = discovery.default_rule()
    other = "explore" if default != "explore" else "continue"
    here = _hits(default, 14, 18) + _hits(other, 10, 18) + _hits("gain-guarded", 18, 18)
    there = _hits(default, 13, 18) + _hits(other, 15, 18)  # gain-guarded did not run there: not added up
    lines = discovery.together(here, there, "the other one")
    table = [line for line in lines if line.startswith("| `")]
    assert sorted(table) == sorted([f"| `{default}` (default) | 14/18 | 13/18 | 27/36 | **75%** |",
                                    f"| `{other}` | 10/18 | 15/18 | 25/36 | **69%** |"])
    verdict = next(line for line in lines if line.startswith("Verdict"))
    assert verdict == (f"Verdict (computed): the most hits over both, 75%, are `{default}`'s; the default "
                       f"(`{default}`) is that variant.")
    assert lines[-1] == "In one file only: `gain-guarded`."
    behind = discovery.together(here, _hits(default, 5, 18) + _hits(other, 18, 18), "x")
    assert (f"Verdict (computed): the most hits over both, 78%, are `{other}`'s; the default (`{default}`) has "
            "53%.") in behind
    tie = discovery.together(here, _hits(default, 11, 18) + _hits(other, 15, 18), "x")
    assert (f"Verdict (computed): the most hits over both, 69%, are `{default}` and `{other}`'s; the default "
            f"(`{default}`) is one of them.") in tie or (
            f"Verdict (computed): the most hits over both, 69%, are `{other}` and `{default}`'s; the default "
            f"(`{default}`) is one of them.") in tie


def test_a_variant_whose_settings_differ_between_the_files_is_not_added_up():
    discovery = _bench("discovery")
    default = discovery.default_rule()
    here = _hits(default, 14, 18) + _hits("resolved", 10, 18, resolve=True)
    there = _hits(default, 13, 18, resolve=True) + _hits("resolved", 9, 18, resolve=True)  # the name meant another
    lines = discovery.together(here, there, "x")
    assert [line for line in lines if line.startswith("| `")] == ["| `resolved` | 10/18 | 9/18 | 19/36 | **53%** |"]
    assert "the default did not run with the same settings in both." in next(
        line for line in lines if line.startswith("Verdict"))
    assert lines[-1] == ("Not added up, their settings differ between the two files (or are not recorded there): "
                         f"`{default}`.")
    unrecorded = [{k: v for k, v in x.items() if k != "settings"} for x in there]  # a file from before settings
    none = discovery.together(here, unrecorded, "x")
    assert "Verdict (computed): no variant ran with the same settings in both." in none


PLAIN = {"growth": {"rule": "pwmp"}}


@pytest.mark.parametrize("fields, variant", [(PLAIN, "pwmp"),
                                             ({**PLAIN, "stop": {"plateau_resolve": True}}, "resolved"),
                                             ({}, "explore"), ({**PLAIN, "final_init": "continue"}, "continue")])
def test_the_report_names_the_variant_that_is_pwmprs_default(monkeypatch, fields, variant):
    import pwmpr.config

    real = pwmpr.config.RunConfig
    monkeypatch.setattr(pwmpr.config, "RunConfig", lambda: real(**fields))
    assert _bench("discovery").default_rule() == variant


def test_a_pair_folder_with_runs_but_no_sweep_is_said_and_other_folders_are_not(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tabular.npz").write_bytes(b"")
    (tmp_path / "a-mlp" / "pwmpr-shrink-perturb-sd0.05-s0").mkdir(parents=True)
    rows, sweeps = _bench("discovery").collect(tmp_path)
    assert rows == [] and sweeps == {}
    err = capsys.readouterr().err
    assert "a-mlp has runs but no sweep" in err and "data" not in err.replace(str(tmp_path), "")


def test_an_earlier_file_without_settings_is_compared_only_for_the_variants_it_is_told_are_the_same():
    discovery = _bench("discovery")

    def run(rule, density, settings=True):
        row = {"rule": rule, "pair": "a-mlp", "seed_density": 0.05, "seed": 0, "discovered_density": density}
        return {**row, "settings": {"growth": "pwmp"}} if settings else row

    here = [run("pwmp", 0.2), run("explore", 0.3)]
    old = [run("pwmp", 0.2, settings=False), run("explore", 0.4, settings=False)]
    assert discovery.reproduction(here, old, "x") == []  # nothing says the names meant the same there
    lines = discovery.reproduction(here, [x for x in old if x["rule"] == "pwmp"], "x", assume_same=True)
    assert "| a-mlp | 0.05 | 1 | 1 | 0.200 | 0.200 |" in lines
    differ = [{**run("pwmp", 0.2), "settings": {"growth": "pwmp-explore"}}]
    assert discovery.reproduction(here, differ, "x") == []  # recorded, and different: no reproduction
