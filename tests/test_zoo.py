"""Every torchvision classifier, and models written the usual way, through the whole engine: PHEW seed, PWMP scores,
one growth step, FLOPs and an export validated in onnxruntime.

CI runs one model per operation at a reduced width (bench/zoo_models.py ``REDUCED``) and the hand-written models;
the 20 torchvision classifiers at their bench sizes are marked slow.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pwmpr import MaskSet, grow, prunable, pwmp_scores, training_flops
from pwmpr.graph import build_unit_graph, mixing_weights
from pwmpr.growth import growth_count
from pwmpr.seed import phew_masks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import zoo_models  # noqa: E402

DENSITY, GAMMA = 0.05, 0.25


# -- models written the usual way ----------------------------------------------------------------------------------
class FunctionalMLP(nn.Module):
    """An MLP whose forward calls torch.relu and F.dropout, as most PyTorch code does."""

    def __init__(self, num_classes: int = 10, input_shape=(3, 32, 32)) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(math.prod(input_shape), 64), nn.Linear(64, 32), nn.Linear(32,
                                                                                                        num_classes)

    def forward(self, x):
        x = torch.relu(self.fc1(x.flatten(1)))
        x = F.dropout(torch.relu(self.fc2(x)), 0.1, self.training)
        return self.fc3(x)


class SEConcatCNN(nn.Module):
    """A CNN with a squeeze-and-excitation gate written inline and a two-branch concatenation."""

    def __init__(self, num_classes: int = 10, input_shape=(3, 32, 32)) -> None:
        super().__init__()
        self.stem = nn.Conv2d(input_shape[0], 16, 3, padding=1)
        self.se1, self.se2 = nn.Linear(16, 4), nn.Linear(4, 16)
        self.left, self.right = nn.Conv2d(16, 8, 1), nn.Conv2d(16, 8, 3, padding=1)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        h = F.relu(F.batch_norm(self.stem(x), None, None, training=True))
        gate = torch.sigmoid(self.se2(F.silu(self.se1(h.mean((2, 3))))))
        h = h * gate[:, :, None, None]
        h = torch.cat([F.gelu(self.left(h)), F.hardswish(self.right(h))], dim=1)
        return self.head(F.adaptive_avg_pool2d(h, 1).flatten(1))


HAND_WRITTEN = {"functional_mlp": (32, FunctionalMLP), "se_concat_cnn": (32, SEConcatCNN)}


def _build(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    table = {**zoo_models.ZOO, **zoo_models.REDUCED, **HAND_WRITTEN}
    side, factory = table[name]
    torch.manual_seed(0)
    shape = (3, side, side)
    return factory(10, shape), shape


@pytest.fixture(scope="module")
def batch():
    """32 real digits (mnist5k), replicated to 3 channels; resized per model."""
    from pwmpr.data import load_data

    bundle = load_data("mnist5k")
    x = bundle.sample_inputs(32, "train").float()
    y = torch.arange(32) % 10
    return x.repeat(1, 3, 1, 1), y


def _train_step(model: nn.Module, masks: MaskSet, x: torch.Tensor, y: torch.Tensor) -> None:
    """One masked SGD step, as the pipeline trains before it scores (torchvision's ViT starts with a zero head)."""
    masks.apply(model)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    F.cross_entropy(model(x), y).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # one sane step, whatever the model's gradient scale
    opt.step()
    masks.apply(model)
    model.eval()


def _branch_share(graph, link_index: int) -> float:
    """The largest share of a unit's walks that take this link at its input's fork (path mass, docs/method.md)."""
    link = graph.links[link_index]
    group = graph.groups[link.src]
    _, bwd = graph.path_masses()
    weights = mixing_weights(graph.branch_masses(link.src, bwd))
    col = group.consumers.index(("link", link_index))
    return float((weights[:, col] / weights.sum(1).clamp(min=1e-300)).max())


def _check_model(name: str, batch, tmp_path: Path, export: bool = True) -> None:
    model, shape = _build(name)
    x, y = batch
    x = F.interpolate(x, size=shape[1:], mode="bilinear", align_corners=False)

    # PHEW: the target density, and no enabled edge off an input-to-output path.
    masks = phew_masks(model, DENSITY, shape, seed=0)
    target = round(DENSITY * masks.n_total())
    assert target <= masks.n_nonzero() <= target + 0.001 * masks.n_total() + 64
    graph = build_unit_graph(model, shape)
    assert sum(graph.dead_edges(masks).values()) == 0
    assert set(graph.params()) == set(prunable(model))  # every prunable weight is walked
    for name_w, n in masks.layer_nonzero().items():
        if n == 0:  # a branch whose path mass is negligible at its fork gets no walk (docs/method.md, Seed)
            index = next(i for i, link in enumerate(graph.links) if link.param == name_w)
            assert _branch_share(graph, index) < 1e-3, f"{name_w} has no seed edge"

    # PWMP after a step of training: every layer with absent edges has some with a positive score.
    _train_step(model, masks, x, y)
    scores = pwmp_scores(model, masks, shape)
    for name_w, mask in masks.items():
        absent = ~mask
        if absent.any():
            assert bool((scores[name_w][absent] > 0).any()), f"{name_w}: no absent edge scores above 0"

    # One growth step grows exactly its budget.
    grown, added = grow(masks, scores, GAMMA, generator=torch.Generator().manual_seed(0))
    assert sum(int(v.numel()) for v in added.values()) == growth_count(masks.n_nonzero(), GAMMA)
    assert grown.n_nonzero() == masks.n_nonzero() + growth_count(masks.n_nonzero(), GAMMA)

    # FLOPs count only present weights.
    flops = training_flops(model, grown, shape)
    assert 0 < flops.sparse < flops.dense

    if export:
        from pwmpr.export.pipeline import export_artifact
        from pwmpr.export.safetensors_io import Artifact
        from pwmpr.models import trusted_code

        grown.apply(model)
        spec = f"test_zoo:{HAND_WRITTEN[name][1].__name__}" if name in HAND_WRITTEN else f"zoo_models:{name}"
        with trusted_code(spec):  # the export reloads the model from its name, as a user's would be
            report = export_artifact(Artifact(model.eval(), grown, spec, 10, shape), tmp_path / "export",
                                     n_inputs=64, timing_runs=1)
        for encoding, row in report["encodings"].items():
            assert row["ok"], (encoding, row)
        assert report["encodings"]["packed"]["folded"]


# A dynamo ONNX export takes 10-40 s on two cores: CI exports the models whose graphs hold the ops an export can
# trip on (attention of each kind, channels-last norms, concatenation, hand-written functional code) and checks the
# engine alone on the others, whose exports run with --run-slow.
EXPORTED_IN_CI = {"squeezenet1_1", "convnext_reduced", "vit_reduced", "swin_reduced", "maxvit_reduced",
                  *HAND_WRITTEN}


@pytest.mark.parametrize("name", [*zoo_models.REDUCED, *HAND_WRITTEN])
def test_reduced_zoo_and_hand_written_models(name, batch, tmp_path):
    _check_model(name, batch, tmp_path, export=name in EXPORTED_IN_CI)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(zoo_models.REDUCED) - EXPORTED_IN_CI))
def test_reduced_zoo_exports(name, batch, tmp_path):
    _check_model(name, batch, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(zoo_models.ZOO))
def test_torchvision_classifiers(name, batch, tmp_path):
    _check_model(name, batch, tmp_path)


def test_a_zoo_name_builds_the_full_width_classifier_the_zoo_table_measures():
    # `pwmpr grow --model zoo_models:NAME` builds the module-level factory NAME, and the zoo's engine columns
    # build ZOO[NAME]: a reduced model registered under a zoo name would make the table grow a smaller model
    # than it counts
    for name, (_side, factory) in zoo_models.ZOO.items():
        assert getattr(zoo_models, name) is factory, name


class _Versioned(nn.Module):
    """A module whose state format has a version it checks on load, as torchvision's MNASNet does."""

    _version = 2

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        if local_metadata.get("version") != 2:
            raise ValueError(f"version should be 2, got {local_metadata.get('version')}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)


def test_a_state_read_from_a_file_loads_into_a_versioned_module():
    from pwmpr.checkpoint import load_state

    source, target = _Versioned(), _Versioned()
    state = {k: v.clone() for k, v in source.state_dict().items()}  # what a safetensors file gives back
    with pytest.raises(ValueError, match="version"):
        target.load_state_dict(state)
    load_state(target, state)
    assert torch.equal(target.fc.weight, source.fc.weight)


# -- operations without a rule: one error naming the module, the op and why ------------------------------------------
@pytest.mark.parametrize("name", list(zoo_models.REFUSED))
def test_an_operation_without_a_rule_is_refused_at_the_seed(name):
    from pwmpr import PwmprError

    model = zoo_models.REFUSED[name][1](10, (3, 8, 8))
    with pytest.raises(PwmprError, match=r"^module \S+ \(\w+\) calls \w+\(\) in its forward: .+"):
        phew_masks(model, 0.2, (3, 8, 8))


def test_the_cli_refuses_an_operation_without_a_rule_in_one_line(tmp_path):
    import os
    import subprocess

    bench = Path(__file__).resolve().parents[1] / "bench"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(bench), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "pwmpr", "grow", "--model", "zoo_models:refused_lstm", "--data",
                           "digits", "--out", str(tmp_path / "run"), "--phase-epochs", "1", "--final-epochs", "1"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: module extra (LSTM) calls lstm() in its forward: ")
