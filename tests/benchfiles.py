"""Loading the bench scripts in tests: ``bench/<name>.py`` as a module, with its siblings importable."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def load_bench(name: str):
    """The bench script ``bench/<name>.py`` as a module (it imports its siblings from bench/)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # where a dataclass of the script looks its module up
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))
