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


DISCOVERY = sorted(p.stem for p in (ROOT / "bench" / "settings").glob("discovery*.json"))


@pytest.mark.parametrize("name", DISCOVERY)
def test_every_discovery_variant_has_flags_the_cli_knows(name):
    spec = json.loads((ROOT / "bench" / "settings" / f"{name}.json").read_text())
    known = {"--" + flag_name(fld) for _path, fld, _hint in leaf_fields()}
    known |= {"--no-" + flag_name(fld) for _path, fld, hint in leaf_fields() if hint is bool}  # a switch's "off"
    for variant in spec["settings"]["VARIANTS"]["value"].split():
        assert variant in spec["variants"]
    for variant, flags in spec["variants"].items():
        assert {f for f in flags.split() if f.startswith("--")} <= known, variant
    got = _shell(f'eval "$(python3 bench/settings.py {name})"; echo "$VARIANT_explore"')
    assert got.strip() == spec["variants"]["explore"]


def test_every_replayed_stop_rule_is_a_valid_stop_config():
    from pwmpr.config import StopConfig
    from pwmpr.stop import STOP_RULES

    rules = json.loads((ROOT / "bench" / "settings" / "stop_replay.json").read_text())["rules"]
    assert sum("(default)" in name for name in rules) == 1
    for name, fields in rules.items():
        stop = StopConfig(**fields)
        assert stop.rule in STOP_RULES, name
        if "(default)" in name:  # the row the report calls the default is pwmpr's default
            default = StopConfig()
            assert (stop.rule, stop.plateau_tol, stop.plateau_resolve) == (default.rule, default.plateau_tol,
                                                                           default.plateau_resolve)


@pytest.mark.parametrize("name", DISCOVERY)
def test_the_variant_the_report_calls_the_default_is_pwmpr_grows_default(name):
    """bench/discovery.py reads the variant named by ``default_rule()`` as pwmpr's default: its flags must leave
    every setting at its default (the flags only spell the defaults out)."""
    from benchfiles import load_bench

    from pwmpr.cli.options import leaf_fields
    from pwmpr.config import RunConfig

    variant = load_bench("discovery").default_rule()
    spec_json = json.loads((ROOT / "bench" / "settings" / f"{name}.json").read_text())
    assert variant in spec_json["settings"]["VARIANTS"]["value"].split()
    flags = spec_json["variants"][variant].split()
    default = RunConfig().to_dict()
    by_flag = {"--" + flag_name(fld): (path, hint) for path, fld, hint in leaf_fields()}
    i = 0
    while i < len(flags):
        flag = flags[i]
        if flag.startswith("--no-") and flag not in by_flag:
            (path, _), value, i = by_flag["--" + flag[5:]], False, i + 1
        elif by_flag[flag][1] is bool:
            (path, _), value, i = by_flag[flag], True, i + 1
        else:
            (path, hint), value, i = by_flag[flag], flags[i + 1], i + 2
            value = hint(value)
        *parents, leaf = path.split(".")
        node = default
        for key in parents:
            node = node[key]
        assert node[leaf] == value, (variant, flag)


@pytest.mark.parametrize("name", ["hybrid", "lm", "compare", "attention", "stop_replay", "stop_replay-heldout"])
def test_a_published_benchmark_names_its_growth_rule_so_it_reruns_as_published(name):
    """A benchmark published before `pwmp-explore` became the default grows by the rule it was made with, whatever
    the default is now: from its settings file (GROWTH) or a rule the script names per run."""
    script = (ROOT / "bench" / f"{name.split('-')[0]}.sh").read_text()
    spec = json.loads((ROOT / "bench" / "settings" / f"{name}.json").read_text())["settings"]
    if "GROWTH" in spec:
        assert spec["GROWTH"]["value"] == "pwmp" and '--growth "$GROWTH"' in script
    else:
        assert '--growth "$rule"' in script


def test_the_zoo_grows_by_the_rule_it_was_published_with():
    source = (ROOT / "bench" / "zoo.py").read_text()
    grow = source[source.index("GROW = ["):source.index("]", source.index("GROW = ["))]
    assert '"--growth", "pwmp"' in grow


@pytest.mark.parametrize("name", ["hybrid", "lm", "compare", "attention"])
def test_a_published_benchmark_runs_without_the_chance_guard_it_was_published_without(name):
    script = (ROOT / "bench" / f"{name}.sh").read_text()
    spec = json.loads((ROOT / "bench" / "settings" / f"{name}.json").read_text())["settings"]
    assert spec["CHANCE_GUARD"]["value"] == "no-chance-guard"
    assert '${CHANCE_GUARD:+"--$CHANCE_GUARD"}' in script or "${CHANCE_GUARD:+--$CHANCE_GUARD}" in script
    zoo = (ROOT / "bench" / "zoo.py").read_text()
    assert '"--no-chance-guard"]' in zoo[zoo.index("GROW = ["):]
