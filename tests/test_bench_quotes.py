"""Every figure block README.md and bench/RESULTS.md quote is, byte for byte, the file a bench script wrote.

A block ``<!-- name:begin -->`` ... ``<!-- name:end -->`` is written by ``bench/_results.py``'s ``publish`` from
``bench/results/<name>.md``; a hand edit of either side (or a results file rewritten without its quotes) fails here.
No training: it only reads files.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
BLOCK = re.compile(r"<!-- ([\w-]+):begin -->\n(.*?)<!-- \1:end -->", re.S)
MARK = "<!-- written by a bench script; do not edit by hand -->"


def quoted_blocks(text: str) -> dict[str, str]:
    """Name -> quoted text of every bench block in ``text``."""
    return {m.group(1): m.group(2) for m in BLOCK.finditer(text)}


def test_block_reading_by_hand():
    text = "a\n<!-- x:begin -->\nline 1\nline 2\n<!-- x:end -->\nb <!-- y:begin -->\nz\n<!-- y:end -->"
    assert quoted_blocks(text) == {"x": "line 1\nline 2\n", "y": "z\n"}


@pytest.mark.parametrize("doc", ["README.md", "bench/RESULTS.md"])
def test_quoted_figures_are_the_files_the_scripts_wrote(doc):
    blocks = quoted_blocks((ROOT / doc).read_text())
    assert blocks, f"{doc} quotes no bench block"
    for name, text in blocks.items():
        written = ROOT / "bench" / "results" / f"{name}.md"
        assert written.is_file(), f"{doc} quotes {name}, but bench/results/{name}.md does not exist"
        assert text == written.read_text(), f"{doc}'s {name} block is not bench/results/{name}.md: rerun its script"
        assert MARK in text


def test_the_headline_grow_figure_names_its_threads_and_its_command():
    grow = quoted_blocks((ROOT / "README.md").read_text())["grow"]
    command = re.search(r"^Command: `(python bench/grow\.py[^`]*)`", grow, re.M)
    assert command is not None and "--threads " in command.group(1), grow[:300]
    threads = int(re.search(r"--threads (\d+)", command.group(1)).group(1))
    assert f"{threads} torch thread(s) per run (OMP_NUM_THREADS={threads})" in grow
    assert re.search(r"torch \d+\.\d+", grow) and "pwmpr commit " in grow
