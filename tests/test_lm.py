"""Language models: byte-level text split by document, gpt-mini, and next-token training in the one trainer."""

from __future__ import annotations

import json
import math
from pydoc_data.topics import topics

import numpy as np
import pytest
import torch

from pwmpr import PwmprError
from pwmpr.config import TrainConfig
from pwmpr.data import MIN_VAL_SAMPLES, load_data
from pwmpr.data.text import paragraphs, split_documents, split_of, text_bundle, windows
from pwmpr.graph.trace import build_unit_graph
from pwmpr.losses import per_target
from pwmpr.masks import MaskSet, prunable
from pwmpr.models import create_model
from pwmpr.models.gpt import GPT
from pwmpr.probe import declare_input_dtype, input_dtype_of, output_width
from pwmpr.score import pwmp_scores
from pwmpr.seed import phew_masks
from pwmpr.train import Trainer


def _bytes(split) -> bytes:
    """The bytes a split's windows cover, in order (each window's inputs, then the last target)."""
    return bytes(split.x.reshape(-1).tolist()) + bytes([int(split.y[-1, -1])])


def test_windows_are_next_byte_pairs_worked_by_hand():
    w = windows(b"abcdefghij", context=3)  # 9 usable bytes: three windows, the tenth byte is the last target
    assert [bytes(r.tolist()) for r in w.x] == [b"abc", b"def", b"ghi"]
    assert [bytes(r.tolist()) for r in w.y] == [b"bcd", b"efg", b"hij"]
    assert w.x.dtype == w.y.dtype == torch.int64


def test_pydoc_text_is_split_by_topic_and_reproducibly():
    # The rule is pinned: these topics are test and validation on every machine (sha256 of the name mod 10).
    assert [split_of(n) for n in ("dict", "raise", "assignment", "objects", "assert")] == \
        ["test", "test", "val", "val", "train"]
    b = load_data("pydoc-text", min_val=MIN_VAL_SAMPLES)
    assert b.input_dtype == torch.int64 and b.num_classes == 256 and b.input_shape == (128,)
    again = load_data("pydoc-text")
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(b, split).x, getattr(again, split).x)
        assert torch.equal(getattr(b, split).y, getattr(again, split).y)
    # Every split is the join of whole topics (sorted), so no topic has text in two splits.
    for split in ("train", "val", "test"):
        names = [n for n in sorted(topics) if split_of(n) == split]
        joined = b"\n".join(topics[n].encode() for n in names)
        covered = _bytes(getattr(b, split))
        assert joined.startswith(covered) and len(joined) - len(covered) <= 128
    assert len(b.val) >= MIN_VAL_SAMPLES and len(b.test) > len(b.val) > 0
    assert 0.7 < len(b.train) / (len(b.train) + len(b.val) + len(b.test)) < 0.95
    # --val-fraction does not move the document split
    assert torch.equal(load_data("pydoc-text", val_fraction=0.5).val.x, b.val.x)


def test_text_path_paragraphs_and_folders_are_documents(tmp_path):
    paras = [f"paragraph {i}: " + "lorem ipsum dolor sit amet " * 12 for i in range(60)]
    f = tmp_path / "corpus.txt"
    f.write_text("\n\n".join(paras) + "\n")
    found = paragraphs(f.read_bytes())
    assert [p.strip() for p in found] == [p.encode().strip() for p in paras]
    b = load_data(f"text:{f}")
    streams = split_documents({p.decode(): p for p in found})
    for split in ("train", "val", "test"):
        assert streams[split].startswith(_bytes(getattr(b, split)))
    assert b.name == f"text:{f}" and b.default_model == "gpt-mini"
    with pytest.raises(PwmprError, match=rf"{len(b.val)} validation sample\(s\).*give it more text"):
        load_data(f"text:{f}", min_val=MIN_VAL_SAMPLES)  # a run's stop rule needs more than this corpus has
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, p in enumerate(paras):
        (folder / f"doc{i:02d}.txt").write_text(p)
    fb = load_data(f"text:{folder}")
    by_file = split_documents({f"doc{i:02d}.txt": p.encode() for i, p in enumerate(paras)})
    assert by_file["test"].startswith(_bytes(fb.test))


def test_text_errors_are_one_line(tmp_path):
    with pytest.raises(PwmprError, match="text file not found"):
        load_data(f"text:{tmp_path / 'missing.txt'}")
    short = tmp_path / "short.txt"
    short.write_text("one short paragraph")
    with pytest.raises(PwmprError, match="less than one window"):
        load_data(f"text:{short}")
    latin = tmp_path / "latin1.txt"
    latin.write_bytes(b"caf\xe9 " * 100)
    with pytest.raises(PwmprError, match="not UTF-8"):
        load_data(f"text:{latin}")


def test_gpt_mini_takes_token_ids_and_returns_logits_per_position():
    m = create_model("gpt-mini", 256, (128,))
    assert input_dtype_of(m) == torch.int64 and output_width(m, (128,)) == 256
    blocks = [n for n in dict(m.named_parameters()) if n.endswith(".weight") and ".attn." in n]
    assert len(blocks) == 16  # 4 layers of q, k, v, proj
    params = dict(m.named_parameters())  # the counts docs/method.md gives
    assert sum(p.numel() for p in params.values()) == 875_520
    assert sum(params[n].numel() for n in MaskSet.dense(m)) == 819_200 and len(MaskSet.dense(m)) == 25
    assert "tok_embed.weight" not in MaskSet.dense(m) and "head.weight" in MaskSet.dense(m)
    ids = torch.randint(0, 256, (2, 10))
    with torch.no_grad():
        full = m(ids)
        prefix = m(ids[:, :6])
    assert full.shape == (2, 10, 256)
    torch.testing.assert_close(full[:, :6], prefix)  # causal: a position never sees the tokens after it
    with pytest.raises(PwmprError, match="token ids but the data are float32"):
        create_model("gpt-mini", 256, (128,), input_dtype=torch.float32)


def test_per_position_targets_count_every_position():
    logits = torch.zeros(2, 3, 4)
    logits[..., 1] = 5.0  # predicts class 1 everywhere
    y = torch.tensor([[1, 1, 0], [2, 1, 3]])
    out, target = per_target(logits, y)
    assert out.shape == (6, 4) and target.tolist() == [1, 1, 0, 2, 1, 3]

    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(1, 1)

        def forward(self, x):
            return logits[: len(x)]

    tr = Trainer(Fixed(), MaskSet({}), TrainConfig(), torch.device("cpu"))
    acc, loss = tr.evaluate([(torch.zeros(2, 3, dtype=torch.long), y)])
    assert acc == pytest.approx(3 / 6)  # per position: 3 of 6 targets are 1
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 4), y.reshape(-1)).item()
    assert loss == pytest.approx(expected)
    with pytest.raises(PwmprError, match="logits per position|a target per position"):
        per_target(torch.zeros(2, 4), y)


def _unigram_perplexity(train_y: torch.Tensor, test_y: torch.Tensor) -> float:
    """The test perplexity of the training bytes' frequencies (add-one smoothed): what ignoring context gets."""
    p = (torch.bincount(train_y.reshape(-1), minlength=256).double() + 1)
    p = p / p.sum()
    counts = torch.bincount(test_y.reshape(-1), minlength=256).double()
    return math.exp(-(counts * p.log()).sum().item() / counts.sum().item())


def _train_lm(model, bundle, steps_per_epoch: int, epochs: int) -> float:
    torch.manual_seed(0)
    bundle.train = type(bundle.train)(bundle.train.x[: 32 * steps_per_epoch], bundle.train.y[: 32 * steps_per_epoch])
    tr = Trainer(model, MaskSet.dense(model), TrainConfig(optimizer="adamw", lr=3e-3, batch_size=32,
                                                          weight_decay=0.0), torch.device("cpu"))
    loader = bundle.loader("train", 32, torch.device("cpu"), train=True, generator=torch.Generator().manual_seed(0))
    tr.train(loader, epochs)
    _, loss = tr.evaluate(bundle.loader("test", 512, torch.device("cpu")))
    return math.exp(loss)


def test_a_small_gpt_learns_pydoc_text_well_past_the_unigram_baseline():
    """200 steps of a 2-layer GPT (width 64) on 32-byte windows: the test perplexity falls far below the unigram
    baseline (about 27), which any model that ignores the context is held to; and stays above 2, which only a model
    that sees the byte it predicts would reach so soon (targets not shifted by one reach 1.01 in these 200 steps).
    The causal mask is checked on its own in test_gpt_mini_takes_token_ids_and_returns_logits_per_position."""
    torch.manual_seed(0)
    b = text_bundle("pydoc-text", {k: v.encode() for k, v in topics.items()}, context=32)
    b.test = type(b.test)(b.test.x[:512], b.test.y[:512])
    unigram = _unigram_perplexity(b.train.y, b.test.y)
    assert 20 < unigram < 35
    ppl = _train_lm(GPT(256, 32, dim=64, depth=2, heads=4, mlp_ratio=2), b, steps_per_epoch=50, epochs=4)
    assert 2 < ppl < 0.6 * unigram


@pytest.mark.slow
def test_gpt_mini_learns_pydoc_text():
    """The registered gpt-mini on the registered data set (128-byte windows), 300 steps."""
    b = load_data("pydoc-text")
    unigram = _unigram_perplexity(b.train.y, b.test.y)
    ppl = _train_lm(create_model("gpt-mini", 256, (128,)), b, steps_per_epoch=100, epochs=3)
    assert 2 < ppl < 0.6 * unigram


# -- the engine on a language model ------------------------------------------------------------------------------


class _TinyLM(torch.nn.Module):
    """Token and position tables (V=3, T=4, d=2) and one Linear: small enough to work PWMP out by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = torch.nn.Embedding(3, 2)
        self.pos = torch.nn.Embedding(4, 2)
        self.fc = torch.nn.Linear(2, 2)
        declare_input_dtype(self, torch.int64)

    def forward(self, ids):
        return self.fc(self.tok(ids) + self.pos(torch.arange(ids.shape[1])))


def test_embedding_in_the_scoring_net_is_a_uniform_token_worked_by_hand():
    """R = sum over 4 positions and 2 outputs of sum_j |W_ij| m_j, m_j = mean_v |E[v, j]| (the position table is an
    additive constant: 0), so dR/dW_ij = 4 m_j."""
    torch.manual_seed(0)
    m = _TinyLM()
    scores = pwmp_scores(m, MaskSet.dense(m), (4,))
    mean = m.tok.weight.detach().abs().mean(0).double()
    torch.testing.assert_close(scores["fc.weight"], 4 * mean.expand(2, 2))


def test_embedding_in_the_unit_graph_is_a_fixed_link_weighted_by_mean_table_magnitude():
    torch.manual_seed(0)
    m = _TinyLM()
    graph = build_unit_graph(m, (4,))
    fixed = [link for link in graph.links if link.param is None]
    assert len(fixed) == 1 and fixed[0].src == 0  # from the input's units, enabling nothing
    mean = m.tok.weight.detach().abs().mean(0)
    torch.testing.assert_close(fixed[0].weight[:, :, 0], mean[:, None].expand(2, 4))
    assert [link.param for link in graph.links if link.param] == ["fc.weight"]


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_pwmp_on_a_tiny_causal_transformer_equals_brute_force_paths(tied):
    """gpt-mini's own classes at vocabulary 3, context 3, width 2, one head, one block, MLP ratio 1, every weight
    signed at random: PWMP equals the sum over every input->output path, written out edge by edge (to 1e-9). The
    stand-ins (docs/method.md, Operations): the token table a uniform token (each feature's mean |E|), the position
    table an additive constant (0), each LayerNorm its |gamma|, GELU the identity, each residual add a sum, causal
    attention uniform over the positions at or before the query (q and k carry no path mass), and the output the
    head's logits summed over every position. Every position carries the same mass here (all-ones ids, a constant
    position table), so the causal mask cannot change a score; test_operations_exact checks the causal mask on a
    head that reads one position. Tied: the head shares the token table, so it stays dense (not masked, not
    scored) and its paths carry |E|."""
    from toy import Edge, enumerate_paths

    torch.manual_seed(0)
    t_, d = 3, 2
    net = GPT(3, t_, dim=d, depth=1, heads=1, mlp_ratio=1)
    if tied:
        net.head.weight = net.tok_embed.weight
    declare_input_dtype(net, torch.int64)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    names = [n for n, p in net.named_parameters() if n.endswith("weight") and p.dim() == 2 and "embed" not in n]
    masks = MaskSet({n: torch.rand(net.get_parameter(n).shape, generator=g) < 0.7 for n in names})
    assert ("head.weight" in masks) != tied and set(masks) == set(prunable(net))
    b = net.blocks[0]

    def w(name):  # |W| * mask (none: dense) as nested lists, [out][in]
        weight = net.get_parameter(name).detach().abs().double()
        return (weight * masks[name] if name in masks else weight).tolist()

    def gamma(norm):
        return norm.weight.detach().abs().double().tolist()

    def dense(level, weights, name, tag_in="a", tag_out="a"):  # a Linear at every position
        return [Edge((level, t, i, tag_in), (level + 1, t, j, tag_out), weights[j][i], (name, (j, i)))
                for t in range(t_) for j in range(len(weights)) for i in range(len(weights[0]))]

    def keep(level, tag_in="r", tag_out="r"):  # the residual stream, carried unchanged
        return [Edge((level, t, j, tag_in), (level + 1, t, j, tag_out), 1.0) for t in range(t_) for j in range(d)]

    mean_e = net.tok_embed.weight.detach().abs().double().mean(0).tolist()
    p_ = "blocks.0."
    layers = [
        [Edge((0, t), (1, t, j, "x"), mean_e[j]) for t in range(t_) for j in range(d)],  # uniform token
        [Edge((1, t, j, "x"), (2, t, j, "a"), gamma(b.norm1)[j]) for t in range(t_) for j in range(d)]
        + keep(1, "x", "r"),
        dense(2, w(p_ + "attn.v.weight"), p_ + "attn.v.weight") + keep(2),
        [Edge((3, s, j, "a"), (4, t, j, "a"), 1.0 / (t + 1)) for t in range(t_) for s in range(t + 1)
         for j in range(d)] + keep(3),  # causal: uniform over positions 0..t
        dense(4, w(p_ + "attn.proj.weight"), p_ + "attn.proj.weight", "a", "x") + keep(4, "r", "x"),
        [Edge((5, t, j, "x"), (6, t, j, "a"), gamma(b.norm2)[j]) for t in range(t_) for j in range(d)]
        + keep(5, "x", "r"),
        dense(6, w(p_ + "fc1.weight"), p_ + "fc1.weight") + keep(6),
        dense(7, w(p_ + "fc2.weight"), p_ + "fc2.weight", "a", "x") + keep(7, "r", "x"),
        [Edge((8, t, j, "x"), (9, t, j, "x"), gamma(net.norm)[j]) for t in range(t_) for j in range(d)],
        dense(9, w("head.weight"), "head.weight", "x", "out"),
    ]
    brute = enumerate_paths([(0, t) for t in range(t_)], layers)
    scores = pwmp_scores(net, masks, (t_,))
    for name in names:
        expected = torch.zeros(masks[name].shape, dtype=torch.float64)
        for (key, idx), value in brute.scores.items():
            if key == name:
                expected[idx] = value
        if name.endswith(("attn.q.weight", "attn.k.weight")):
            assert not expected.any()  # blind under uniform attention, as in the paper
        else:
            assert expected.abs().sum() > 0, name
        torch.testing.assert_close(scores[name], expected, rtol=1e-9, atol=1e-12, msg=name)


def test_phew_seeds_every_layer_of_a_small_gpt():
    torch.manual_seed(0)
    m = GPT(256, 16, dim=32, depth=1, heads=2, mlp_ratio=2)
    declare_input_dtype(m, torch.int64)
    masks = phew_masks(m, 0.1, (16,), seed=0)
    assert masks.density() == pytest.approx(0.1, abs=0.01)
    assert all(masks[n].any() for n in masks), {n: masks[n].float().mean().item() for n in masks}


def test_float_data_for_a_model_of_token_ids_is_refused():
    with pytest.raises(PwmprError, match="token ids but the data are float32"):
        declare_input_dtype(_TinyLM(), torch.float32)


@pytest.mark.slow
def test_grow_gpt_mini_on_pydoc_text_end_to_end(tmp_path):
    """A short `pwmpr grow` on the language model: density grows, perplexity is recorded as exp(loss), the
    stop rule counts every validation position, and the run exports to ONNX that matches PyTorch."""
    from typer.testing import CliRunner

    from pwmpr.cli.app import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["grow", "--data", "pydoc-text", "--model", "gpt-mini", "--phase-epochs", "1",
                                      "--final-epochs", "1", "--max-phases", "2", "--max-train", "64",
                                      "--batch-size", "32", "--optimizer", "adamw", "--no-tau-core", "--out",
                                      str(out), "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_ppl"] == pytest.approx(math.exp(summary["test_loss"]))
    rows = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert rows[1]["density"] > rows[0]["density"]
    assert all(r["val_ppl"] == pytest.approx(math.exp(r["val_loss"])) for r in rows)
    assert rows[0]["val_n"] == len(load_data("pydoc-text").val) * 128  # validation positions, not windows
    exported = CliRunner().invoke(app, ["export", str(out), "--out", str(tmp_path / "export")])
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "export" / "model.onnx").is_file()
    assert "any seq from 1 to 128; checked at 128 and 64" in exported.output


def test_every_growth_rule_scores_a_small_gpt_on_token_batches():
    """The rules that score on a real batch take token ids and per-position targets; the q/k rules reach q and k."""
    from pwmpr.growth import GROWTH_RULES
    from pwmpr.seed import uniform_masks

    torch.manual_seed(0)
    m = GPT(256, 16, dim=32, depth=1, heads=2, mlp_ratio=2)
    declare_input_dtype(m, torch.int64)
    masks = uniform_masks(m, 0.2, (16,), seed=0)
    ids = torch.randint(0, 256, (4, 17))
    for rule in GROWTH_RULES.names():
        scores = GROWTH_RULES.get(rule).scores(m, masks, (16,), lambda: (ids[:, :-1], ids[:, 1:]))
        if rule == "random":
            continue
        assert set(scores) == set(masks), rule
        if rule.startswith("pwmp-qk") or rule in ("gradient", "pwmp-attn"):
            assert scores["blocks.0.attn.q.weight"].sum() > 0 and scores["blocks.0.attn.k.weight"].sum() > 0, rule


def test_export_checks_top1_per_position_of_a_language_model():
    from pwmpr.export import validate

    ref = np.zeros((1, 2, 3))
    ref[0, 0, 0] = ref[0, 1, 2] = 1.0  # position 0 predicts class 0, position 1 class 2
    got = ref.copy()
    got[0, 1] = [0.0, 1.0, 0.0]  # position 1 now predicts class 1: a per-sample argmax (still class 0) misses it
    agreement = validate.measure_agreement(ref, got)
    assert agreement.n_top1_checked == 2 and agreement.n_top1_mismatch == 1


def tiny_gpt(num_classes: int, input_shape: tuple[int, ...]) -> torch.nn.Module:
    """A one-block GPT of width 16, the size an export test can afford."""
    model = GPT(num_classes, input_shape[0], dim=16, depth=1, heads=2, mlp_ratio=2)
    declare_input_dtype(model, torch.int64)
    return model


def test_export_of_a_language_model_runs_sequences_shorter_than_training(tmp_path):
    """The ONNX graph takes any batch and any sequence length up to the training context: each encoding is
    validated on half-length sequences too, and the written files match PyTorch at lengths 1, 5 and 12."""
    import onnxruntime as ort

    from pwmpr.export.onnx_graph import ENCODINGS
    from pwmpr.export.pipeline import encoding_file, export_artifact
    from pwmpr.export.safetensors_io import Artifact
    from pwmpr.models import trusted_code

    torch.manual_seed(0)
    model = tiny_gpt(256, (12,))
    masks = phew_masks(model, 0.3, (12,), seed=0)
    masks.apply(model)
    with trusted_code("test_lm:tiny_gpt"):
        report = export_artifact(Artifact(model.eval(), masks, "test_lm:tiny_gpt", 256, (12,)), tmp_path / "export",
                                 n_inputs=64, timing_runs=1, all_encodings=True)
    assert report["dynamic_sequence"]
    for enc, row in report["encodings"].items():
        assert row["ok"] and row["short_sequence"] == {**row["short_sequence"], "length": 6, "ok": True}, enc
    for enc in ENCODINGS:
        sess = ort.InferenceSession(str(tmp_path / "export" / encoding_file(enc)), providers=["CPUExecutionProvider"])
        for length in (1, 5, 12):
            ids = torch.randint(0, 256, (3, length))
            with torch.inference_mode():
                ref = model(ids).numpy()
            got = sess.run(None, {sess.get_inputs()[0].name: ids.numpy()})[0]
            assert got.shape == (3, length, 256)
            np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)


class _FixedLengthLM(torch.nn.Module):
    """Token ids plus a position table added whole: its forward takes exactly 12 positions."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = torch.nn.Embedding(256, 8)
        self.pos = torch.nn.Parameter(torch.randn(12, 8))
        self.fc = torch.nn.Linear(8, 256)
        declare_input_dtype(self, torch.int64)

    def forward(self, ids):
        return self.fc(self.tok(ids) + self.pos)


def fixed_length_lm(num_classes: int, input_shape: tuple[int, ...]) -> torch.nn.Module:
    return _FixedLengthLM()


def test_export_of_a_language_model_of_fixed_length_keeps_that_length(tmp_path):
    from pwmpr.export.pipeline import export_artifact
    from pwmpr.export.safetensors_io import Artifact
    from pwmpr.models import trusted_code

    torch.manual_seed(0)
    model = _FixedLengthLM()
    masks = MaskSet.dense(model)
    with trusted_code("test_lm:fixed_length_lm"):
        report = export_artifact(Artifact(model.eval(), masks, "test_lm:fixed_length_lm", 256, (12,)),
                                 tmp_path / "export", n_inputs=64, timing_runs=1)
    assert report["dynamic_sequence"] is False
    assert all(row["ok"] and "short_sequence" not in row for row in report["encodings"].values())


@pytest.mark.parametrize("model", ["tiny_gpt", "tied_gpt"])
def test_a_language_model_run_cut_back_to_its_first_checkpoint_resumes_to_the_same_run(tmp_path, model):
    """What a kill after phase 0 leaves (its checkpoint and history row) resumes to the uninterrupted run's history
    and bit-identical final masks and weights: token batches, AdamW state and the per-position loss included. The
    tied model's prunable weights are not in name order (q before k), which the masks read back must not change."""
    import shutil

    from runfiles import history, without_timing
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from pwmpr.cli.app import app

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in sorted(topics)[:40]:
        (corpus / f"{name}.txt").write_text(topics[name])
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    args = ["grow", "--data", f"text:{corpus}", "--model", f"test_lm:{model}", "--phase-epochs", "1",
            "--final-epochs", "1", "--max-phases", "3", "--max-train", "48", "--batch-size", "16", "--optimizer",
            "adamw", "--seed-density", "0.1", "--no-tau-core", "--keep-checkpoints", "0", "--max-cost", "0", "-q"]
    result = CliRunner().invoke(app, [*args, "--out", str(whole)])
    assert result.exit_code == 0, result.output
    assert [r["stage"] for r in history(whole)] == ["phase", "phase", "phase", "final"]
    shutil.copytree(whole, cut)
    for path in [cut / "summary.json", cut / "final.safetensors", *sorted((cut / "checkpoints").iterdir())[1:]]:
        path.unlink()
    (cut / "history.jsonl").write_text(json.dumps(history(whole)[0]) + "\n")
    result = CliRunner().invoke(app, ["grow", "--resume", str(cut), "--trust-code", "-q"])
    assert result.exit_code == 0, result.output
    assert without_timing(history(whole)) == without_timing(history(cut))
    a, b = load_file(whole / "final.safetensors"), load_file(cut / "final.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_context_sets_the_window_of_text_and_the_models_input(tmp_path):
    """``--context 24``: 24-byte windows, a model built for 24 positions, recorded in config.json for resume and
    export; the export's validation inputs are those windows."""
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from pwmpr.cli.app import app

    b = load_data("pydoc-text", context=24)
    assert b.input_shape == (24,) and b.train.x.shape[1] == b.train.y.shape[1] == 24
    assert torch.equal(b.train.x[1, :1], b.train.y[0, -1:])  # windows follow each other
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["grow", "--data", "pydoc-text", "--context", "24", "--model",
                                      "test_lm:tiny_gpt", "--phase-epochs", "1", "--final-epochs", "1",
                                      "--max-phases", "1", "--max-train", "32", "--batch-size", "16", "--no-tau-core",
                                      "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["context"] == 24
    assert load_file(out / "final.safetensors")["model/pos_embed.weight"].shape == (24, 16)
    from pwmpr.export.pipeline import validation_inputs
    from pwmpr.export.safetensors_io import read_run_artifact
    from pwmpr.models import trusted_code

    with trusted_code("test_lm:tiny_gpt"):
        x, note = validation_inputs(read_run_artifact(out))
    assert x.shape == (64, 24) and x.dtype == np.int64 and "from data set" in note


def test_a_sweep_reads_text_in_windows_of_its_context():
    from pwmpr.config import RunConfig
    from pwmpr.models import trusted_code
    from pwmpr.sweep import SweepConfig
    from pwmpr.sweep.running import prepare

    cfg = SweepConfig(densities=[0.2], base=RunConfig(data="pydoc-text", model="test_lm:tiny_gpt", context=24,
                                                      device="cpu"))
    with trusted_code("test_lm:tiny_gpt"):
        assert prepare(cfg).input_shape == (24,)


def undeclared_gpt(num_classes: int, input_shape: tuple[int, ...]) -> torch.nn.Module:
    """A user's GPT factory that does not declare its token-id input: pwmpr learns it from the data."""
    return GPT(num_classes, input_shape[0], dim=16, depth=1, heads=2, mlp_ratio=2)


def test_a_token_model_that_declares_no_input_dtype_exports_and_loads_back(tmp_path):
    """The run and export files record the token-id dtype the data gave, so the model rebuilt from either takes
    token ids and gives the grown model's logits."""
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    import pwmpr
    from pwmpr.cli.app import app

    run, export = tmp_path / "run", tmp_path / "export"
    result = CliRunner().invoke(app, ["grow", "--data", "pydoc-text", "--context", "8", "--model",
                                      "test_lm:undeclared_gpt", "--phase-epochs", "1", "--final-epochs", "1",
                                      "--max-phases", "1", "--max-train", "32", "--batch-size", "16", "--no-tau-core",
                                      "--out", str(run), "-q"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(export), "--trust-code", "-q"])
    assert result.exit_code == 0, result.output
    ids = torch.randint(0, 256, (2, 8))
    state = {k.removeprefix("model/"): v for k, v in load_file(run / "final.safetensors").items()
             if k.startswith("model/")}
    reference = undeclared_gpt(256, (8,))
    reference.load_state_dict(state)
    with torch.inference_mode():
        expected = reference.eval()(ids)
    for folder in (run, export):
        model, masks = pwmpr.load(folder, trust_remote_code=True)
        assert 0 < masks.density() < 1
        with torch.inference_mode():
            torch.testing.assert_close(model(ids), expected)


def test_an_input_dtype_pwmpr_does_not_know_is_one_error():
    from pwmpr.errors import PwmprError
    from pwmpr.probe import dtype_named

    assert dtype_named("int64", "f") is torch.int64 and dtype_named(None, "f") is None
    with pytest.raises(PwmprError, match="f: unknown input dtype 'int8'"):
        dtype_named("int8", "f")


def test_a_language_model_of_context_one_exports_with_a_fixed_length(tmp_path):
    """A context of 1 leaves no shorter sequence to vary over: the graph takes any batch of one-token sequences."""
    from pwmpr.export.pipeline import export_artifact
    from pwmpr.export.safetensors_io import Artifact
    from pwmpr.models import trusted_code

    torch.manual_seed(0)
    model = tiny_gpt(256, (1,))
    masks = phew_masks(model, 0.3, (1,), seed=0)
    masks.apply(model)
    with trusted_code("test_lm:tiny_gpt"):
        report = export_artifact(Artifact(model.eval(), masks, "test_lm:tiny_gpt", 256, (1,)), tmp_path / "export",
                                 n_inputs=64, timing_runs=1)
    assert report["dynamic_sequence"] is False
    assert all(row["ok"] for row in report["encodings"].values())


def tied_gpt(num_classes: int, input_shape: tuple[int, ...]) -> torch.nn.Module:
    """tiny_gpt with its head tied to the token table (one Parameter under two names)."""
    model = tiny_gpt(num_classes, input_shape)
    model.head.weight = model.tok_embed.weight
    return model


def test_a_gpt_with_a_tied_head_grows_exports_and_loads_back(tmp_path):
    """A tied head stays dense with its token table; the run's files hold the weight under both names, final
    training's start changes it under both (the same growth, continue against shrink-perturb), and the model
    rebuilt from the run or the export is tied again and gives the run's logits."""
    from typer.testing import CliRunner

    import pwmpr
    from pwmpr import rundir
    from pwmpr.cli.app import app

    args = ["grow", "--data", "pydoc-text", "--context", "8", "--model", "test_lm:tied_gpt", "--phase-epochs", "1",
            "--final-epochs", "1", "--max-phases", "2", "--max-train", "32", "--batch-size", "16", "--no-tau-core",
            "--keep-checkpoints", "0", "--max-cost", "0", "-q"]  # the dense head costs more than the guard allows
    for start in ("continue", "shrink-perturb"):
        result = CliRunner().invoke(app, [*args, "--final-init", start, "--out", str(tmp_path / start)])
        assert result.exit_code == 0, result.output

    def final_start(run):
        ck = next(c for c in reversed(rundir.checkpoints(run)) if rundir.load_tensors(c)[1]["stage"] == "final")
        return rundir.split_prefix(rundir.load_tensors(ck)[0], rundir.MODEL_PREFIX)

    initial = rundir.split_prefix(rundir.load_tensors(rundir.checkpoints(tmp_path / "shrink-perturb")[0])[0],
                                  "start/state/")
    grown, shrunk = final_start(tmp_path / "continue"), final_start(tmp_path / "shrink-perturb")
    for name in ("tok_embed.weight", "head.weight"):
        torch.testing.assert_close(shrunk[name], 0.4 * grown[name] + 0.1 * initial[name], rtol=0, atol=1e-7)
    final = rundir.split_prefix(rundir.load_tensors(tmp_path / "shrink-perturb" / "final.safetensors")[0],
                                rundir.MODEL_PREFIX)
    assert torch.equal(final["head.weight"], final["tok_embed.weight"])
    reference = tied_gpt(256, (8,))
    reference.load_state_dict(final)
    ids = torch.randint(0, 256, (2, 8))
    with torch.inference_mode():
        expected = reference.eval()(ids)
    export = tmp_path / "export"
    result = CliRunner().invoke(app, ["export", str(tmp_path / "shrink-perturb"), "--out", str(export),
                                      "--trust-code", "-q"])
    assert result.exit_code == 0, result.output
    for folder in (tmp_path / "shrink-perturb", export):
        model, masks = pwmpr.load(folder, trust_remote_code=True)
        assert "head.weight" not in masks and model.head.weight is model.tok_embed.weight
        with torch.inference_mode():
            torch.testing.assert_close(model(ids), expected)


def test_a_tied_head_costs_its_dense_multiply_accumulates():
    """Tied or not, the head computes the same logits: the dense count is the same, and under masks the tied head
    (never masked) adds its whole 16 x 256 per position to the sparse count."""
    from pwmpr.cost import training_flops

    untied, tied = tiny_gpt(256, (8,)), tied_gpt(256, (8,))
    assert training_flops(tied, None, (8,)).dense == training_flops(untied, None, (8,)).dense
    masks = phew_masks(tied, 0.1, (8,), seed=0)
    count = training_flops(tied, masks, (8,))
    assert count.layers["head.weight"].sparse == count.layers["head.weight"].dense == 8 * 16 * 256
    assert count.sparse == 8 * 16 * 256 + sum(f.sparse for n, f in count.layers.items() if n != "head.weight")
