"""The benchmarks' published settings are checked-in files (bench/settings/*.json) that the scripts read."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from pwmpr.cli.options import flag_name, leaf_fields

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = sorted((ROOT / "bench" / "settings").glob("*.json"))


def _shell(script: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, check=True,
                          env={**os.environ, **(env or {})}).stdout


def _script_of(path: Path) -> str:
    """The script a settings file is for: NAME.json is bench/NAME.sh's, NAME-OTHER.json the same script's with
    SETTINGS=NAME-OTHER."""
    return path.stem.split("-")[0]


@pytest.mark.parametrize("path", SETTINGS, ids=lambda p: p.stem)
def test_each_script_takes_its_settings_from_its_file_and_from_nowhere_else(path):
    spec = json.loads(path.read_text())
    name = _script_of(path)
    script = (ROOT / "bench" / f"{name}.sh").read_text()
    reads_own = f"python3 bench/settings.py {name}" in script
    reads_named = (f"SETTINGS=${{SETTINGS:-{name}}}" in script and 'python3 bench/settings.py "$SETTINGS"' in script)
    assert reads_own or reads_named
    assert path.stem == name or reads_named, "a second settings file for a script that cannot be told to read it"
    defaults_in_script = set(re.findall(r"^([A-Z_]+)=\$\{\1:-", script, flags=re.M))
    assert not defaults_in_script & set(spec["settings"]), "a setting with a second default in the script"
    keys = list(spec["settings"])
    echo = "; ".join(f'echo "${key}"' for key in keys)
    got = _shell(f'eval "$(python3 bench/settings.py {path.stem})"; {echo}').splitlines()
    assert got == [str(spec["settings"][k]["value"]) for k in keys]


def test_the_environment_overrides_a_setting_for_smoke_runs():
    got = _shell('eval "$(python3 bench/settings.py discovery)"; echo "$PHASE_EPOCHS|$EPOCHS"', {"PHASE_EPOCHS": "1"})
    assert got.strip() == "1|30"


@pytest.mark.parametrize("name", ["discovery", "discovery-heldout"])
def test_every_discovery_variant_has_flags_the_cli_knows(name):
    spec = json.loads((ROOT / "bench" / "settings" / f"{name}.json").read_text())
    known = {"--" + flag_name(fld) for _path, fld, _hint in leaf_fields()}
    known |= {"--no-" + flag_name(fld) for _path, fld, hint in leaf_fields() if hint is bool}  # a switch's "off"
    for variant in spec["settings"]["VARIANTS"]["value"].split():
        assert variant in spec["variants"]
    for variant, flags in spec["variants"].items():
        assert {f for f in flags.split() if f.startswith("--")} <= known, variant
    got = _shell(f'eval "$(python3 bench/settings.py {name})"; echo "$VARIANT_shrink_perturb"')
    assert got.strip() == spec["variants"]["shrink-perturb"]


def test_every_replayed_stop_rule_is_a_valid_stop_config():
    from pwmpr.config import StopConfig
    from pwmpr.stop import STOP_RULES

    rules = json.loads((ROOT / "bench" / "settings" / "stop_replay.json").read_text())["rules"]
    assert sum("(default)" in name for name in rules) == 1
    for name, fields in rules.items():
        stop = StopConfig(**fields)
        assert stop.rule in STOP_RULES, name
        if "(default)" in name:  # the row the report calls the default is pwmpr's default
            assert (stop.rule, stop.plateau_tol) == (StopConfig().rule, StopConfig().plateau_tol)
