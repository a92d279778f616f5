"""RunConfig: range checks, JSON round trip, unknown keys and versions refused."""

import json

import pytest

from pwmpr.cli.options import apply_overrides
from pwmpr.config import RunConfig
from pwmpr.errors import PwmprError


def test_round_trip_through_json(tmp_path):
    cfg = RunConfig(model="cnn", seed=3, growth={"gamma": 0.5}, train={"lr": 0.05})
    cfg.save(tmp_path / "config.json")
    back = RunConfig.load(tmp_path)
    assert back == cfg and back.growth.gamma == 0.5 and back.train.lr == 0.05


def test_defaults_follow_the_spec():
    cfg = RunConfig()
    assert (cfg.growth.seed_density, cfg.growth.gamma, cfg.growth.rule) == (0.05, 0.25, "pwmp-explore")
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
        RunConfig(**kwargs)


def test_costs_are_relative_to_a_dense_run_of_the_final_epochs_by_default():
    assert RunConfig(final_epochs=5, phase_epochs=10).dense_reference_epochs == 5
    assert RunConfig(final_epochs=0, phase_epochs=10).dense_reference_epochs == 10
    assert RunConfig(final_epochs=5, reference_epochs=40).dense_reference_epochs == 40


def test_unknown_keys_and_versions_are_refused(tmp_path):
    data = RunConfig().to_dict()
    with pytest.raises(PwmprError, match="unknown key.*colour"):
        RunConfig.from_dict({**data, "colour": "red"})
    with pytest.raises(PwmprError, match="unknown key.*gama"):
        RunConfig.from_dict({**data, "growth": {"gama": 0.3}})
    with pytest.raises(PwmprError, match="version"):
        RunConfig.from_dict({**data, "version": 99})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PwmprError, match="cannot read"):
        RunConfig.load(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text(json.dumps([1, 2]))
    with pytest.raises(PwmprError, match="JSON object"):
        RunConfig.load(tmp_path / "list.json")


def test_a_version_1_config_keeps_its_meaning():
    """Run folders written before --shrink-alpha (version 1) judged the shrink stage at the stop rule's alpha; they
    still do. Their always-written SGD default lr becomes "not given", so --optimizer adamw on them takes 1e-3."""
    old = RunConfig().to_dict()
    old["version"] = 1
    old["stop"]["rule"] = "gain"
    del old["shrink"]["alpha"], old["train"]["optimizer"]
    old["train"]["lr"] = 0.1
    old["stop"]["alpha"] = 0.2
    cfg = RunConfig.from_dict(old)
    assert cfg.shrink.alpha == 0.2
    assert cfg.train.lr is None and cfg.train.base_lr == 0.1 and cfg.train.optimizer == "sgd"
    assert apply_overrides(cfg, {"train.optimizer": "adamw"}).train.base_lr == 1e-3
    del old["stop"]["alpha"]
    assert RunConfig.from_dict(old).shrink.alpha == 0.1  # the stop rule's default
    old["train"]["lr"] = 0.05  # a learning rate the user chose stays
    assert RunConfig.from_dict(old).train.lr == 0.05
    del old["shrink"]
    assert RunConfig.from_dict(old).shrink.alpha == 0.5  # nothing said about shrinking: today's default
    assert RunConfig.from_dict(old).stop.rule == "gain"  # a version-1 folder that names its rule keeps it
    for key in ("rule", "tol", "alpha"):  # written before the stop rules had names: the first, unbounded fit
        old["stop"].pop(key, None)
    assert RunConfig.from_dict(old).stop.rule == "paper-unbounded"
    assert RunConfig.from_dict({"stop": {"max_phases": 3}}).stop.rule == "plateau"  # a hand-written config: today's


def test_a_version_3_config_keeps_the_gain_rule_and_the_one_point_plateau_it_ran_with():
    """Before version 4 the default stop was the gain rule with a plateau fallback at one point per doubling: a
    folder of that time that does not name them still means them, and one that names them keeps what it names."""
    old = RunConfig().to_dict()
    old["version"] = 3
    del old["stop"]["rule"], old["stop"]["plateau_tol"]
    stop = RunConfig.from_dict(old).stop
    assert (stop.rule, stop.plateau_tol) == ("gain", 0.01)
    del old["stop"]
    assert RunConfig.from_dict(old).stop.rule == "gain"
    old["stop"] = {"rule": "paper", "plateau_tol": 0.02}
    stop = RunConfig.from_dict(old).stop
    assert (stop.rule, stop.plateau_tol) == ("paper", 0.02)
    old["version"] = 4
    del old["stop"]
    assert (RunConfig.from_dict(old).stop.rule, RunConfig.from_dict(old).stop.plateau_tol) == ("plateau", 0.005)


def test_a_version_4_config_keeps_final_training_from_the_grown_weights():
    """Before version 5 final training continued from the grown weights: a folder of that time that does not name
    its start still means "continue"; one that names it keeps it; today's default is shrink-perturb."""
    old = RunConfig().to_dict()
    old["version"] = 4
    del old["final_init"]
    assert RunConfig.from_dict(old).final_init == "continue"
    assert RunConfig.from_dict({**old, "final_init": "rewind"}).final_init == "rewind"
    assert RunConfig.from_dict({**old, "version": 2}).final_init == "continue"
    assert RunConfig.from_dict({k: v for k, v in old.items() if k != "version"}).final_init == "shrink-perturb"
    assert RunConfig().final_init == "shrink-perturb"


def test_a_version_5_config_keeps_the_plateau_window_of_the_last_points():
    """Before version 6 the plateau test read the last points however few validation samples they stood for: a
    folder of that time that does not say still means that; one that says keeps it. Today's default is the last
    points again (docs/method.md, "plateau"), and a folder that asks for the widened window keeps it."""
    old = RunConfig().to_dict()
    old["version"] = 5
    del old["stop"]["plateau_resolve"]
    assert RunConfig.from_dict(old).stop.plateau_resolve is False
    assert RunConfig.from_dict({**old, "version": 3}).stop.plateau_resolve is False
    old["stop"]["plateau_resolve"] = True
    assert RunConfig.from_dict(old).stop.plateau_resolve is True
    del old["stop"]
    assert RunConfig.from_dict(old).stop.plateau_resolve is False
    assert RunConfig.from_dict({k: v for k, v in old.items() if k != "version"}).stop.plateau_resolve is False
    assert RunConfig().stop.plateau_resolve is False
    from pwmpr.config import _migrate_v5

    assert _migrate_v5({"stop": {}})["stop"]["plateau_resolve"] is False  # whatever today's default is
    assert _migrate_v5({"stop": {"plateau_resolve": True}})["stop"]["plateau_resolve"] is True
    widened = RunConfig(stop={"plateau_resolve": True}).to_dict()
    assert RunConfig.from_dict(widened).stop.plateau_resolve is True


def test_the_plateau_rule_with_no_tolerance_is_refused():
    with pytest.raises(PwmprError, match="plateau_tol"):
        RunConfig.from_dict({"stop": {"rule": "plateau", "plateau_tol": 0}})
    assert RunConfig.from_dict({"stop": {"rule": "gain", "plateau_tol": 0}}).stop.plateau_tol == 0


def test_a_config_written_today_is_not_migrated():
    """A hand-written config (no version) or a current one means what it says: a partial shrink section takes
    today's default alpha, and lr 0.1 with AdamW is AdamW at 0.1."""
    assert RunConfig.from_dict({"shrink": {"enabled": True, "tol": 0.02}}).shrink.alpha == 0.5
    current = RunConfig().to_dict()
    del current["shrink"]["alpha"]
    assert RunConfig.from_dict(current).shrink.alpha == 0.5
    assert RunConfig.from_dict({"train": {"optimizer": "adamw", "lr": 0.1}}).train.base_lr == 0.1


def test_a_version_6_config_runs_without_the_chance_guard_it_did_not_have():
    """Before version 7 no stop was held back at chance: a folder of that time resumes as it ran; today's default
    holds them back, and a config that says keeps what it says."""
    from pwmpr.config import _migrate_v6

    old = RunConfig().to_dict()
    old["version"] = 6
    del old["stop"]["chance_guard"]
    assert RunConfig.from_dict(old).stop.chance_guard is False
    assert RunConfig.from_dict({**old, "version": 5}).stop.chance_guard is False
    assert _migrate_v6({"stop": {}})["stop"]["chance_guard"] is False
    assert _migrate_v6({"stop": {"chance_guard": True}})["stop"]["chance_guard"] is True
    assert RunConfig().stop.chance_guard is True and RunConfig.from_dict(RunConfig().to_dict()).stop.chance_guard
