"""Every registered model builds, runs on its input shape, and rejects shapes it cannot take."""

import pytest
import torch

from pwmpr import MODELS, PwmprError, create_model, prunable
from pwmpr.probe import input_dtype_of

SHAPES = {"mlp": (1, 28, 28), "cnn": (1, 28, 28), "gpt-mini": (16,)}
PRUNABLE_COUNTS = {"resnet20": 270_896, "resnet32": 464_432, "resnet56": 851_504, "mlp": 266_200}


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_builds_and_runs(name):
    shape = SHAPES.get(name, (3, 32, 32))
    model = create_model(name, 10, shape)
    model.eval()
    tokens = not input_dtype_of(model).is_floating_point  # a language model: ids in, logits per position out
    with torch.no_grad():
        out = model(torch.randint(0, 10, (2, *shape)) if tokens else torch.randn(2, *shape))
    assert out.shape == ((2, *shape, 10) if tokens else (2, 10))
    assert prunable(model)


@pytest.mark.parametrize(("name", "count"), PRUNABLE_COUNTS.items())
def test_prunable_weight_counts_match_the_architectures(name, count):
    model = create_model(name, 10, SHAPES.get(name, (3, 32, 32)))
    params = dict(model.named_parameters())
    assert sum(params[n].numel() for n in prunable(model)) == count


def test_cifar_resnet_has_1x1_shortcuts_only_where_shape_changes():
    model = create_model("resnet20", 10, (3, 32, 32))
    shortcut_convs = [n for n in prunable(model) if "shortcut" in n]
    assert shortcut_convs == ["blocks.3.shortcut.0.weight", "blocks.6.shortcut.0.weight"]


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(PwmprError, match="unknown model 'resnet21'.*resnet20"):
        create_model("resnet21", 10, (3, 32, 32))


@pytest.mark.parametrize(("name", "shape"), [("resnet20", (784,)), ("cnn", (3, 2, 2, 2)), ("mlp", (0, 4))])
def test_bad_input_shape_names_input_shape(name, shape):
    with pytest.raises(PwmprError, match="input_shape"):
        create_model(name, 10, shape)
