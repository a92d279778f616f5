"""A second model zoo the rules were not written against: transformers' image and sequence classifiers
(bench/hf_models.py, built from their configs, untrained). Each one's unit graph is read and its PWMP scores are
computed at a seed, or it is refused in one line that names the op; a few grow, learn and export end to end.
Skipped where transformers is not installed (the README's test install brings it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from benchfiles import load_bench
from typer.testing import CliRunner

from pwmpr import prunable, pwmp_scores
from pwmpr.cli.app import app
from pwmpr.errors import PwmprError
from pwmpr.graph import build_unit_graph
from pwmpr.graph.mask_hold import check_masks_hold
from pwmpr.probe import declare_input_dtype
from pwmpr.seed import phew_masks

pytest.importorskip("transformers")
HF = load_bench("hf_models")

#: The models whose forward the walks cannot follow, and the words of the one line that says why.
REFUSED = {
    "fnet": "calls fft_fftn() in its forward: pwmpr has no rule for this op",
    "funnel": "it multiplies an activation by a batched constant",  # a relative-position term
    "convbert": "it joins attention scores with other tensors",
    "nystromformer": "it combines attention scores with another activation",  # products of softmaxes
    "siglip": "it multiplies a batched constant by an activation",  # attention pooling with a learned query
}
#: Walked, but refused at the start because a mask would not hold: the layer recomputes its weight.
NO_HOLD = {"bit": "the weight it uses is computed from"}  # weight standardization


def _shape(name: str) -> tuple[int, ...]:
    task, _, size, _ = HF.SPECS[name]
    return (3, size, size) if task == "image" else (size,)


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = HF.build(name, 10).eval()
    if HF.SPECS[name][0] == "text":
        declare_input_dtype(model, torch.int64)
    return model


def _pattern(words: str) -> str:
    return words.replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("name", list(HF.SPECS))
def test_each_model_is_walked_and_scored_or_refused_in_one_line(name):
    model, shape = _model(name), _shape(name)
    if name in REFUSED:
        with pytest.raises(PwmprError, match=_pattern(REFUSED[name])) as err:
            build_unit_graph(model, shape)
        assert "\n" not in str(err.value)
        return
    graph = build_unit_graph(model, shape)
    names = prunable(model)
    heads = [n for n in names if 10 in model.get_parameter(n).shape[:2]]  # the layers giving the 10 class scores
    assert set(heads) & set(graph.params_to_output())  # the classifier is on the path the walks follow
    masks = phew_masks(model, 0.1, shape)
    if name in NO_HOLD:
        with pytest.raises(PwmprError, match=_pattern(NO_HOLD[name])):
            check_masks_hold(model, masks, shape)
        return
    check_masks_hold(model, masks, shape)
    off_path = [n for n in names if n not in set(graph.params())]
    assert all(masks[n].all() for n in off_path)  # a weight on no path computes a constant: kept whole
    scores = pwmp_scores(model, masks, shape)
    assert all(torch.isfinite(scores[n]).all() for n in names)
    assert sum(float(scores[n][~masks[n]].sum()) for n in names) > 0  # growth has edges to choose from


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_a_sequence_classifier_grows_learns_and_exports(tmp_path, monkeypatch, name):
    monkeypatch.syspath_prepend(str(Path(HF.__file__).parent))  # bench/: hf_models, as a user's module
    run, export = tmp_path / "run", tmp_path / "export"
    runner = CliRunner()
    data = load_bench("reach").token_data(16, 1200, tmp_path, HF.VOCAB)  # the bench's token task
    grown = runner.invoke(app, ["grow", "--data", f"npz:{data}", "--model",
                                f"hf_models:{name}", "--trust-code", "--seed-density", "0.3", "--phase-epochs", "3",
                                "--final-epochs", "8", "--max-phases", "2", "--batch-size", "32", "--optimizer",
                                "adamw", "--lr", "0.003", "--no-tau-core", "-q", "--out", str(run)])
    assert grown.exit_code == 0, grown.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_acc"] > 0.7, summary["test_acc"]  # the majority class holds about 0.6
    exported = runner.invoke(app, ["export", str(run), "--out", str(export), "--trust-code", "-q"])
    assert exported.exit_code == 0, exported.output
    report = json.loads((export / "export_report.json").read_text())
    assert all(e["ok"] for e in report["encodings"].values())
