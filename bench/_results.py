"""Shared by the bench scripts: the machine a figure was measured on, and quoting a results file into the docs.

Every bench script writes its table to ``bench/results/<name>.md`` with its command and machine; README.md and
bench/RESULTS.md quote those files between ``<!-- name:begin -->`` and ``<!-- name:end -->`` markers, so no figure
there is typed by hand.
"""

from __future__ import annotations

import os
import platform
import shlex
import statistics
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


def header(command: str, extra: str = "", note: str = "") -> list[str]:
    """The first lines of a results file: where it comes from, the command, the machine and the date.

    ``extra`` ends the machine line (e.g. the repeat count); ``note`` is a provenance note (e.g. a shared machine)
    printed in bold under it.
    """
    try:
        load = "; load average {:.1f} / {:.1f} / {:.1f} (1 / 5 / 15 min) when written".format(*os.getloadavg())
    except OSError:
        load = ""
    lines = ["<!-- written by a bench script; do not edit by hand -->", f"Command: `{command}`  ",
             f"Machine: {machine()}; {datetime.now(timezone.utc):%Y-%m-%d}" + (f"; {extra}" if extra else "") + load,
             ""]
    return lines + ([f"**Note:** {note}", ""] if note else [])


def command(script: str) -> str:
    """The command line that ran ``script`` (``bench/NAME.py``), with its arguments as given."""
    return shlex.join(["python", script, *sys.argv[1:]])


# A timing whose max exceeds its min by more than this share is flagged as noisy.
NOISE_LIMIT = 0.20


def spread(values: list[float]) -> float:
    """max / min - 1 of ``values`` (inf when the min is 0)."""
    lo, hi = min(values), max(values)
    return hi / lo - 1 if lo > 0 else (0.0 if hi == lo else float("inf"))


def noisy(values: list[float], limit: float = NOISE_LIMIT) -> bool:
    """Whether the max/min spread of ``values`` exceeds ``limit``."""
    return len(values) > 1 and spread(values) > limit


def mmm(values: list[float], fmt: str = ".3f") -> str:
    """``min / median / max`` of ``values``, each formatted with ``fmt``; ``values`` alone when there is one."""
    if len(values) == 1:
        return format(values[0], fmt)
    return " / ".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


def noise_rule(repeats: int, marked: bool = True) -> str:
    """The sentence every timing table carries about its statistic and the noise flag (``marked``: in the cell)."""
    flag = "a figure marked **(noisy)** has" if marked else "a figure is flagged as noisy when it has"
    return (f"Timings are min / median / max over {repeats} repeat(s); {flag} a max more than "
            f"{100 * NOISE_LIMIT:.0f}% above its min.")


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


def quote_where_marked(path: Path, name: str, text: str) -> bool:
    """``quote_into`` where ``path`` has ``name``'s markers; False (and nothing written) where it has not."""
    doc = path.read_text()
    if f"<!-- {name}:begin -->" not in doc or f"<!-- {name}:end -->" not in doc:
        return False
    quote_into(path, name, text)
    return True


def quote_report(results: Path, texts: dict[str, str], docs: tuple[str, ...] = ("bench/RESULTS.md", "README.md")
                 ) -> list[str]:
    """Quote a report written to ``results`` into ``docs``: each ``texts`` entry (marker name -> text) wherever a
    doc has that marker. Only a report in bench/results is quoted (a smoke run's elsewhere is not); returns the
    ``doc:marker`` pairs updated."""
    if results.resolve().parent != (ROOT / "bench" / "results").resolve():
        return []
    return [f"{doc}:{name}" for doc in docs for name, text in texts.items()
            if quote_where_marked(ROOT / doc, name, text)]


def publish(name: str, text: str, docs: tuple[str, ...] = ("bench/RESULTS.md", "README.md")) -> Path:
    """Write ``bench/results/<name>.md`` and quote it into ``docs`` wherever they have its markers."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(text)
    for doc in docs:
        quote_into(ROOT / doc, name, text)
    return path


def finished_run(path: Path) -> tuple[dict, list[dict]] | None:
    """The summary and history of a finished run folder (read by ``pwmpr.compare.records.read_run``); None while it has
    no summary yet (a run still going, or never started)."""
    if not (path / "summary.json").is_file():
        return None
    from pwmpr.compare.records import read_run

    record = read_run(path)
    return record.summary, record.history


def mean_std(values: list[float], fmt: str) -> str:
    """``mean ± std`` of ``values`` (sample std), each formatted with ``fmt``; one value alone; ``-`` for none."""
    if not values:
        return "-"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.fmean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


def paired(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, int] | None:
    """Mean, standard error (nan for one seed) and count of ``a[seed] - b[seed]`` over the seeds both have."""
    diffs = [a[k] - b[k] for k in sorted(set(a) & set(b))]
    if not diffs:
        return None
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
    return statistics.fmean(diffs), se, len(diffs)
