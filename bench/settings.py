"""A benchmark's published settings (bench/settings/NAME.json) as shell assignments.

    eval "$(python3 bench/settings.py NAME)"

Every setting becomes a shell variable unless the environment already sets it (smoke runs override that way); a
file's ``variants`` become ``VARIANT_<name>`` variables (``-`` read as ``_``) holding that variant's flags.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

SETTINGS = Path(__file__).resolve().parent / "settings"


def read(name: str) -> dict:
    """The settings file of benchmark ``name``."""
    return json.loads((SETTINGS / f"{name}.json").read_text())


def variant_var(variant: str) -> str:
    """The shell variable holding a variant's flags."""
    return "VARIANT_" + variant.replace("-", "_")


def shell(name: str) -> str:
    """Shell lines that set every setting not already in the environment, then the variants' flags."""
    spec = read(name)
    lines = [f'[ -n "${{{key}+x}}" ] || {key}={shlex.quote(str(entry["value"]))}'
             for key, entry in spec["settings"].items()]
    lines += [f"{variant_var(v)}={shlex.quote(flags)}" for v, flags in spec.get("variants", {}).items()]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2 or not (SETTINGS / f"{sys.argv[1]}.json").is_file():
        known = ", ".join(sorted(p.stem for p in SETTINGS.glob("*.json")))
        sys.exit(f"usage: python3 bench/settings.py NAME (one of {known})")
    print(shell(sys.argv[1]))
