"""The README's "Using it" block runs top to bottom as written, in an empty folder, each command exiting 0.

The commands are read from README.md itself: the first fenced ``bash`` block under the "## Using it" heading.
They run in order, each through the installed ``pwmpr`` console script (``torchrun`` lines are not in that block),
in one temporary folder. To keep the test short, and only that, every command that trains gets ``SHORT`` flags
appended (flags given last override the same flags written earlier): 1 epoch per phase and of the final training,
at most 2 growth phases, 600 training samples. Nothing else is changed; a command that resumes (``--resume``) takes
no flag and gets none.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
HEADING = "## Using it"
SHORT = {
    "grow": ["--phase-epochs", "1", "--final-epochs", "1", "--max-phases", "2", "--max-train", "600"],
    "baseline": ["--epochs", "1", "--max-train", "600"],
    "sweep": ["--epochs", "1", "--max-train", "600"],
}


def using_it_commands(text: str) -> list[str]:
    """The command lines of the first ``bash`` block under the "Using it" heading (comments and blanks dropped)."""
    start = text.index(f"\n{HEADING}\n")
    end = text.find("\n## ", start + 1)
    section = text[start: end if end != -1 else len(text)]
    block = re.search(r"^```bash\n(.*?)^```", section, flags=re.S | re.M)
    assert block is not None, f"no ```bash block under {HEADING!r} in README.md"
    lines = []
    for line in block.group(1).splitlines():
        command = line.split("#", 1)[0].strip()
        if command:
            lines.append(command)
    return lines


def shortened(command: str, cwd: Path) -> list[str]:
    """``command`` as argv (globs expanded in ``cwd``, like a shell), with ``SHORT`` flags for a training command."""
    import glob

    argv: list[str] = []
    for word in shlex.split(command):
        hits = sorted(glob.glob(word, root_dir=cwd)) if any(c in word for c in "*?[") else []
        argv += hits or [word]
    assert argv[0] == "pwmpr", f"the block must run pwmpr commands, got {command!r}"
    sub = argv[1] if len(argv) > 1 else ""
    if sub in SHORT and "--resume" not in argv:
        argv += SHORT[sub]
    return [str(Path(sys.executable).with_name("pwmpr")), *argv[1:]]


def test_the_block_is_read_from_the_readme():
    commands = using_it_commands(README.read_text())
    assert commands[0] == "pwmpr grow"
    assert any(c.startswith("pwmpr compare") for c in commands)
    assert not any("|" in c or "cifar" in c or "npz:" in c for c in commands), commands  # runnable, offline


def test_block_parsing_drops_comments_and_takes_the_first_bash_block():
    text = ("# t\n\n## Using it\n\nprose\n\n```bash\npwmpr grow   # a comment\n\n# only a comment\n"
            "pwmpr models\n```\n\n```bash\npwmpr grow --data cifar10\n```\n\n## Next\n")
    assert using_it_commands(text) == ["pwmpr grow", "pwmpr models"]


def test_short_flags_are_appended_only_to_training_commands(tmp_path):
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "b").mkdir()
    assert shortened("pwmpr compare runs/*", tmp_path)[1:] == ["compare", "runs/a", "runs/b"]
    assert shortened("pwmpr grow --resume runs/a", tmp_path)[1:] == ["grow", "--resume", "runs/a"]
    assert shortened("pwmpr sweep --seeds 0,1", tmp_path)[1:] == ["sweep", "--seeds", "0,1", *SHORT["sweep"]]


@pytest.mark.slow  # about 4 minutes on a loaded 2-core machine (11 processes, each importing torch): --run-slow
def test_using_it_runs_top_to_bottom(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    for command in using_it_commands(README.read_text()):
        done = subprocess.run(shortened(command, tmp_path), cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"README command {command!r} exited {done.returncode}:\n" \
                                     f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert (tmp_path / "exports" / "cnn" / "model.onnx").is_file()
    assert (tmp_path / "compare").is_dir()
