"""Shared by the bench scripts: the machine a figure was measured on, and quoting a results file into the docs.

Every bench script writes its table to ``bench/results/<name>.md`` with its command and machine; README.md and
bench/RESULTS.md quote those files between ``<!-- name:begin -->`` and ``<!-- name:end -->`` markers, so no figure
there is typed by hand.
"""

from __future__ import annotations

import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def machine() -> str:
    """CPU model, core count, Python and torch versions, and the GPU if there is one."""
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}, {gpu}"


def header(command: str, extra: str = "") -> list[str]:
    """The first lines of a results file: where it comes from, the command, the machine and the date."""
    return ["<!-- written by a bench script; do not edit by hand -->", f"Command: `{command}`  ",
            f"Machine: {machine()}; {datetime.now(timezone.utc):%Y-%m-%d}" + (f"; {extra}" if extra else ""), ""]


def quote_into(path: Path, name: str, text: str) -> None:
    """Replace what stands between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in ``path`` with ``text``."""
    doc = path.read_text()
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in doc or end not in doc:
        print(f"bench: no {begin} ... {end} block in {path}; not updated", file=sys.stderr)
        return
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{text}{end}{tail}")


def publish(name: str, text: str, docs: tuple[str, ...] = ("bench/RESULTS.md", "README.md")) -> Path:
    """Write ``bench/results/<name>.md`` and quote it into ``docs`` wherever they have its markers."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(text)
    for doc in docs:
        quote_into(ROOT / doc, name, text)
    return path
