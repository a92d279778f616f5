"""One source for every option: the flags of ``grow`` and the baselines are generated from the config dataclasses.

Each test recomputes what the flags should be straight from the dataclasses (``RunConfig`` and its sections,
``ImpOptions``, ``OneShotOptions``), not from ``pwmpr.cli.options``, and compares it with the click commands Typer
built: every field has exactly one flag of its type, every flag maps to a field or is run control, the help lists
the registries' names, a flag really sets its field, and the ``--resume`` refusal names only flags that exist.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import typing

import pytest
import typer.main
from typer.testing import CliRunner

from pwmpr.cli.app import app
from pwmpr.cli.baseline import BASELINE_SKIP
from pwmpr.config import RunConfig
from pwmpr.methods.dst import RiglOptions, SetOptions
from pwmpr.methods.imp import ImpOptions
from pwmpr.methods.oneshot import OneShotOptions

runner = CliRunner()
#: RunConfig fields with no flag on any command, and why.
NOT_FLAGS = {"method": "the command is the method", "options": "each method's options dataclass has its own flags"}
#: Flags that steer a run rather than set a config field.
RUN_CONTROL = {"--out", "--resume", "--config", "--force", "--trust-code", "--quiet"}
#: Flags of a baseline that set something other than one field: --epochs sets phase_epochs and final_epochs.
BASELINE_EXTRA = {"--epochs"}
#: The baselines' own name for a config field.
BASELINE_NAMES = {"train.final_schedule": "schedule"}
BASELINES = {"dense": None, "imp": ImpOptions, "oneshot": OneShotOptions, "rigl": RiglOptions, "set": SetOptions}
TYPES = {int: "<int>", float: "<float>", str: "<str>"}
TINY = ["--data", "digits", "--model", "mlp", "--phase-epochs", "1", "--final-epochs", "1", "--max-phases", "2",
        "--no-tau-core", "-q"]


def _leaves(cls: type, prefix: str = "") -> dict[str, tuple[dataclasses.Field, type]]:
    """``{path: (field, type)}`` of every field of ``cls``, sections flattened, ``int | None`` as ``int``."""
    out: dict[str, tuple[dataclasses.Field, type]] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out.update(_leaves(hint, f"{prefix}{f.name}."))
            continue
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        out[prefix + f.name] = (f, args[0] if len(args) == 1 else hint)
    return out


def _name(f: dataclasses.Field) -> str:
    return "--" + f.metadata.get("flag", f.name.replace("_", "-"))


def _command(*path: str):
    cmd = typer.main.get_command(app)
    for part in path:
        cmd = cmd.commands[part]
    return cmd


def _flags(cmd) -> dict[str, object]:
    """``{--long-name: click parameter}`` of a command (``--help`` left out)."""
    out = {}
    for p in cmd.params:
        if p.name != "help":
            long = [o for o in p.opts if o.startswith("--")]
            assert len(long) == 1, p.opts
            out[long[0]] = p
    return out


def _expect(flags: dict, name: str, fld: dataclasses.Field, kind: type) -> None:
    """Flag ``name`` exists once, takes ``kind``, is None (not given) by default and has ``fld``'s help."""
    assert name in flags, f"field {fld.name} has no flag {name}"
    p = flags[name]
    assert p.default is None, name
    if kind is bool:
        assert p.is_flag and p.secondary_opts == [name.replace("--", "--no-", 1)], name
    else:
        assert not p.is_flag and p.display_type(None) == TYPES[kind], (name, p.display_type(None))
    if fld.default is not dataclasses.MISSING and fld.default is not None:
        shown = str(fld.default).lower() if isinstance(fld.default, bool) else str(fld.default)
        assert f"(default: {shown})" in p.help, (name, p.help)


def _config_paths() -> dict[str, tuple[dataclasses.Field, type]]:
    return {p: v for p, v in _leaves(RunConfig).items() if p not in NOT_FLAGS}


def test_every_config_field_has_exactly_one_flag_on_grow_and_every_flag_a_field():
    flags = _flags(_command("grow"))
    fields = _config_paths()
    names = [_name(f) for f, _ in fields.values()]
    assert len(names) == len(set(names)), "two config fields want the same flag name"
    for path, (fld, kind) in fields.items():
        _expect(flags, _name(fld), fld, kind)
        assert fld.metadata.get("help"), f"{path} has no help text"
    assert set(flags) == set(names) | RUN_CONTROL, set(flags) ^ (set(names) | RUN_CONTROL)


def test_the_flag_names_users_type_today_still_exist():
    flags = _flags(_command("grow"))
    for name in ("--growth", "--stop", "--stop-tol", "--stop-alpha", "--plateau-tol", "--seed-density",
                 "--seed-method", "--phase-epochs", "--final-epochs", "--max-phases", "--max-density", "--bf16",
                 "--tau-core", "--workers", "--trust-code", "--gamma", "--scope", "--reference-epochs"):
        assert name in flags, name
    assert "-o" in flags["--out"].opts and "-q" in flags["--quiet"].opts
    assert flags["--bf16"].secondary_opts == ["--no-bf16"] and flags["--tau-core"].secondary_opts == ["--no-tau-core"]


@pytest.mark.parametrize("method", BASELINES)
def test_every_baseline_option_and_shared_field_has_exactly_one_flag(method):
    flags = _flags(_command("baseline", method))
    expected = set(RUN_CONTROL | BASELINE_EXTRA)
    options = BASELINES[method]
    if options is not None:
        for path, (fld, kind) in _leaves(options).items():
            assert fld.metadata.get("help"), f"{options.__name__}.{path} has no help text"
            _expect(flags, _name(fld), fld, kind)
            expected.add(_name(fld))
    for path, (fld, kind) in _config_paths().items():
        assert path not in BASELINE_SKIP or BASELINE_SKIP[path], path  # a skipped field says why
        if path in BASELINE_SKIP:
            continue
        name = "--" + BASELINE_NAMES[path] if path in BASELINE_NAMES else _name(fld)
        _expect(flags, name, fld, kind)
        expected.add(name)
    assert len(expected) == len(RUN_CONTROL | BASELINE_EXTRA) + sum(
        1 for p in _config_paths() if p not in BASELINE_SKIP) + len(_leaves(options) if options else {}), \
        "two fields share a flag name"
    assert set(flags) == expected, set(flags) ^ expected


def _registry_names(fld: dataclasses.Field) -> list[str]:
    module, _, attr = fld.metadata["registry"].partition(":")
    return getattr(importlib.import_module(module), attr).names()


def test_help_of_registry_valued_flags_lists_the_registry():
    grow = _flags(_command("grow"))
    checked = 0
    for fld, _ in _config_paths().values():
        if "registry" in fld.metadata:
            names = _registry_names(fld)
            assert names and all(n in grow[_name(fld)].help for n in names), (fld.name, grow[_name(fld)].help)
            checked += 1
    assert checked >= 5  # model, data, seed method, growth rule, stop rule
    method = next(f for f in dataclasses.fields(OneShotOptions) if f.name == "pruner")
    oneshot = _flags(_command("baseline", "oneshot"))
    assert all(n in oneshot["--method"].help for n in _registry_names(method))


def _every_flag(cmd) -> list[str]:
    """A command line giving every configuring flag of ``cmd`` a value (any value: the refusal comes first)."""
    args = []
    for name, p in _flags(cmd).items():
        if name in RUN_CONTROL:
            continue
        args += [name] if p.is_flag else [name, "1"]
    return args


@pytest.mark.parametrize("command", [("grow",), *[("baseline", m) for m in BASELINES]], ids=" ".join)
def test_resume_refusal_names_only_flags_that_exist(command, tmp_path):
    cmd = _command(*command)
    given = _every_flag(cmd)
    result = runner.invoke(app, [*command, "--resume", str(tmp_path), *given, "--config", str(tmp_path / "c.json"),
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "--resume takes the run folder's own config.json" in lines[0], result.output
    named = set(re.findall(r"--[a-z][a-z0-9-]*", lines[0].split(";", 1)[1]))
    assert named <= set(_flags(cmd)), named - set(_flags(cmd))
    # --lr is the one flag --resume takes (a lower learning rate after a divergence).
    assert named == {g for g in given if g.startswith("--") and g != "--lr"} | {"--config", "--out"}


# A valid value other than the default for each string field (a new str field must be added here).
STRINGS = {"model": "mlp", "data": "digits", "data_dir": "somewhere", "device": "cpu", "train.phase_schedule":
           "constant", "train.final_schedule": "step", "growth.seed_method": "random", "growth.rule": "random",
           "growth.scope": "layer", "stop.rule": "paper", "train.optimizer": "adamw",
           "pruner": "synflow", "variant": "continue", "final_init": "rewind", "growth.init_scale": "fan-in",
           "augment": "crop"}


def _other(path: str, fld: dataclasses.Field, kind: type):
    """A valid value of the field that is not its default, as (command-line args, the value the config holds)."""
    default = fld.default
    if kind is bool:
        return [("--no-" if default else "--") + _name(fld)[2:]], not default
    if kind is str:
        value = STRINGS[path]
    elif kind is int:
        value = 20 if default is None else default + 1
    else:
        value = 0.01 if not default else default / 2
    return [_name(fld), str(value)], value


def _captured(monkeypatch) -> list:
    """Replace the runner: record the RunConfig a command would run (nothing is trained)."""
    import pwmpr.run_folder

    seen = []
    monkeypatch.setattr(pwmpr.run_folder, "run_config", lambda cfg, out, **kw: seen.append(cfg) or {})
    return seen


def test_every_grow_flag_sets_its_config_field(monkeypatch, tmp_path):
    seen = _captured(monkeypatch)
    args, want = [], {}
    for path, (fld, kind) in _config_paths().items():
        a, want[path] = _other(path, fld, kind)
        args += a
    result = runner.invoke(app, ["grow", *args, "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 0, result.output
    data = seen[0].to_dict()
    for path, value in want.items():
        section, _, name = path.rpartition(".")
        assert (data[section] if section else data)[name] == value, path


@pytest.mark.parametrize("method", ["imp", "oneshot"])
def test_every_baseline_option_flag_sets_its_option(method, monkeypatch, tmp_path):
    seen = _captured(monkeypatch)
    args, want = [], {}
    for path, (fld, kind) in _leaves(BASELINES[method]).items():
        a, want[path] = _other(path, fld, kind)
        args += a
    result = runner.invoke(app, ["baseline", method, *args, "--schedule", "step", "--momentum", "0.8",
                                 "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 0, result.output
    cfg = seen[0]
    assert cfg.method == method and cfg.options == want
    assert cfg.train.final_schedule == "step" and cfg.train.momentum == 0.8


def test_a_generated_flag_lands_in_config_json(tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["grow", *TINY, "--stop-tol", "0.02", "--stop-consecutive", "3", "--out", str(run)])
    assert result.exit_code == 0, result.output
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["stop"]["tol"] == 0.02 and cfg["stop"]["consecutive"] == 3 and cfg["tau_core"] is False
