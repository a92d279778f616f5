"""The held-out discovery benchmark (bench/settings/discovery-heldout.json): its pairs, data, model and report."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SETTINGS = BENCH / "settings"


def _bench(name):
    """``bench/<name>.py`` as a module (it imports its siblings from bench/)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_heldout_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


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


def test_the_held_out_pairs_are_none_of_the_tuned_benchmarks_and_both_scripts_read_the_same():
    tuned = {_pair_parts(p)[2] for p in _settings("discovery")["PAIRS"]["value"].split()}
    held = _settings("discovery-heldout")
    labels = {_pair_parts(p)[2] for p in held["PAIRS"]["value"].split()}
    assert len(labels) == 3 and not labels & tuned
    replay = _settings("stop_replay-heldout")
    assert replay["PAIRS"]["value"] == held["PAIRS"]["value"]
    assert replay["DATA_PREP"]["value"] == held["DATA_PREP"]["value"]
    assert replay["SWEEPS"]["value"] == held["OUT"]["value"]
    assert _settings("stop_replay")["PAIRS"]["value"] == _settings("discovery")["PAIRS"]["value"]


def test_the_tabular_set_is_the_same_every_time_and_an_existing_file_is_kept(tmp_path):
    for d in ("a", "b"):
        subprocess.run([sys.executable, "bench/discovery_data.py", str(tmp_path / d)], cwd=ROOT, check=True,
                       capture_output=True)
    a, b = np.load(tmp_path / "a" / "tabular.npz"), np.load(tmp_path / "b" / "tabular.npz")
    assert a["x"].shape == (20_000, 40) and a["x"].dtype == np.float32
    assert np.array_equal(a["x"], b["x"]) and np.array_equal(a["y"], b["y"])
    counts = np.bincount(a["y"])
    assert len(counts) == 6 and counts.min() > 0.95 * len(a["y"]) / 6  # balanced classes 0..5
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


REPORT = ("<!-- written by a bench script; do not edit by hand -->\nCommand: `x`\n\nA run is a **hit** when ...\n\n"
          "| variant | runs | hits |\n|---|---|---|\n| a | 3 | 2 |\n\nVerdict (computed): a.\n\n"
          "Per data/model pair ...:\n\n| pair |\n|---|\n")


def test_the_summary_is_the_headline_of_the_report():
    summary = _bench("discovery").summary(REPORT)
    assert summary.startswith("<!-- written by a bench script")
    assert "| a | 3 | 2 |" in summary and "Verdict (computed): a." in summary
    assert "Per data/model pair" not in summary and "| pair |" not in summary


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
           "IMP_LEVELS": "1", "VARIANTS": "shrink-perturb", "MAX_TRAIN": "300"}
    subprocess.run(["bash", "bench/discovery.sh"], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    report = json.loads((out / "report.json").read_text())
    assert sorted({r["pair"] for r in report["rows"]}) == ["digits-relu_mlp", "tabular-mlp"]
    assert all(r["hit"] is not None for r in report["rows"])  # every pair had its sweep and its IMP run
