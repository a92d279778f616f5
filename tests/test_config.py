"""GrowConfig: range checks, JSON round trip, unknown keys and versions refused."""

import json

import pytest

from pwmpr.config import GrowConfig
from pwmpr.errors import PwmprError


def test_round_trip_through_json(tmp_path):
    cfg = GrowConfig(model="cnn", seed=3, growth={"gamma": 0.5}, train={"lr": 0.05})
    cfg.save(tmp_path / "config.json")
    back = GrowConfig.load(tmp_path)
    assert back == cfg and back.growth.gamma == 0.5 and back.train.lr == 0.05


def test_defaults_follow_the_spec():
    cfg = GrowConfig()
    assert (cfg.growth.seed_density, cfg.growth.gamma, cfg.growth.rule) == (0.05, 0.25, "pwmp")
    assert (cfg.phase_epochs, cfg.stop.min_points, cfg.stop.consecutive) == (10, 4, 2)
    train = cfg.train
    assert (train.base_lr, train.momentum, train.weight_decay, train.batch_size) == (0.1, 0.9, 1e-4, 128)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"growth": {"seed_density": 0.0}}, "seed_density"),
        ({"growth": {"seed_density": 1.5}}, "seed_density"),
        ({"growth": {"gamma": -0.1}}, "gamma"),
        ({"phase_epochs": 0}, "phase_epochs"),
        ({"stop": {"max_density": 2.0}}, "max_density"),
        ({"train": {"lr": 0.0}}, "lr"),
        ({"train": {"batch_size": 0}}, "batch_size"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_out_of_range_values_name_the_field(kwargs, name):
    with pytest.raises(PwmprError, match=name):
        GrowConfig(**kwargs)


def test_costs_are_relative_to_a_dense_run_of_the_final_epochs_by_default():
    assert GrowConfig(final_epochs=5, phase_epochs=10).dense_reference_epochs == 5
    assert GrowConfig(final_epochs=0, phase_epochs=10).dense_reference_epochs == 10
    assert GrowConfig(final_epochs=5, reference_epochs=40).dense_reference_epochs == 40


def test_unknown_keys_and_versions_are_refused(tmp_path):
    data = GrowConfig().to_dict()
    with pytest.raises(PwmprError, match="unknown key.*colour"):
        GrowConfig.from_dict({**data, "colour": "red"})
    with pytest.raises(PwmprError, match="unknown key.*gama"):
        GrowConfig.from_dict({**data, "growth": {"gama": 0.3}})
    with pytest.raises(PwmprError, match="version"):
        GrowConfig.from_dict({**data, "version": 99})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PwmprError, match="cannot read"):
        GrowConfig.load(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text(json.dumps([1, 2]))
    with pytest.raises(PwmprError, match="JSON object"):
        GrowConfig.load(tmp_path / "list.json")


def test_a_config_from_before_shrink_alpha_keeps_its_meaning():
    """Run folders written before --shrink-alpha judged the shrink stage at the stop rule's alpha; they still do."""
    old = GrowConfig().to_dict()
    del old["shrink"]["alpha"]
    old["stop"]["alpha"] = 0.2
    assert GrowConfig.from_dict(old).shrink.alpha == 0.2
    del old["stop"]["alpha"]
    assert GrowConfig.from_dict(old).shrink.alpha == 0.1  # the stop rule's default
    del old["shrink"]
    assert GrowConfig.from_dict(old).shrink.alpha == 0.5  # nothing said about shrinking: today's default
