"""Code, tests and docs cite only what the repository holds: docs/method.md's sections, never an outside document."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Written in pieces so this file does not match itself.
OUTSIDE = re.compile("|".join([r"spec" + r" sections?\b", r"\bissues?\s+#?\d+", r"machine" + r"-notes",
                               r"\.\./" + r"shared", r"paper" + r"-spec\.md"]), re.IGNORECASE)


def test_no_file_cites_a_document_or_issue_the_repository_does_not_hold():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    hits = []
    for name in files:
        path = ROOT / name
        if path.suffix not in {".py", ".md", ".sh", ".toml", ".json", ".txt", ".cfg", ""} or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        hits += [f"{name}:{i}: {line.strip()[:100]}" for i, line in enumerate(text.splitlines(), 1)
                 if OUTSIDE.search(line)]
    assert not hits, "\n".join(hits)
