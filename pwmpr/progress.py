"""Progress reporting: rich live bars on a terminal, plain log lines otherwise, nothing with --quiet."""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any


class Reporter:
    """Silent reporter (``--quiet``); the base of the others."""

    def run_start(self, text: str) -> None:
        """Once, when the run starts."""

    def phase_start(self, phase: int, density: float, stage: str) -> None:
        """Before a phase trains."""

    def train_start(self, *, stage: str, epochs: int, n_batches: int) -> None:
        """Before the first batch of a phase."""

    def batch_done(self) -> None:
        """After every optimizer step."""

    def epoch_done(self, *, epoch: int, loss: float) -> None:
        """After every epoch."""

    def train_done(self) -> None:
        """After the last batch of a phase."""

    def phase_done(self, row: dict[str, Any]) -> None:
        """After a phase was evaluated and recorded."""

    def message(self, text: str) -> None:
        """A one-line notice."""

    def close(self) -> None:
        """When its owner is done with it (a sweep: after its last point)."""

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PlainReporter(Reporter):
    """One log line per epoch and per phase (for logs, CI and Docker without a TTY)."""

    def __init__(self, stream=None, every: float = 10.0) -> None:
        self.stream = stream or sys.stdout
        self.every = every
        self.epochs = 0
        self.t0 = self.last = time.perf_counter()
        self.prefix = ""

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def run_start(self, text):
        self._print(text)

    def phase_start(self, phase, density, stage):
        self.prefix = f"[{stage} {phase}] density {density:.4f}"

    def train_start(self, *, stage, epochs, n_batches):
        self.epochs = epochs
        self.t0 = self.last = time.perf_counter()

    def epoch_done(self, *, epoch, loss):
        # An epoch line at most every `every` seconds: quiet for small runs, a heartbeat for long epochs.
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            self._print(f"{self.prefix} epoch {epoch + 1}/{self.epochs} loss {loss:.4f} ({now - self.t0:.1f}s)")

    def phase_done(self, row):
        self._print(_row_text(row))

    def message(self, text):
        self._print(text)


class RichReporter(Reporter):
    """Live rich progress: phase, epoch, batches, live density and accuracy."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=self.console, transient=False,
        )
        self.progress.start()
        self.task = None
        self.desc = ""
        self.epochs = 0

    def run_start(self, text):
        self.console.print(text)

    def phase_start(self, phase, density, stage):
        self.desc = f"{stage} {phase} · density {density:.4f}"

    def train_start(self, *, stage, epochs, n_batches):
        self.epochs = epochs
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(self.desc, total=epochs * n_batches, info=f"epoch 1/{epochs}")

    def batch_done(self):
        self.progress.advance(self.task)

    def epoch_done(self, *, epoch, loss):
        self.progress.update(self.task, info=f"epoch {epoch + 1}/{self.epochs} loss {loss:.3f}")

    def phase_done(self, row):
        self.console.print(_row_text(row))

    def message(self, text):
        self.console.print(text)

    def close(self):
        self.progress.stop()


def make_reporter(quiet: bool = False) -> Reporter:
    """Rich on a terminal, plain lines otherwise, silent when ``quiet`` and on every torchrun rank but rank 0."""
    from pwmpr import dist

    if quiet or not dist.is_primary():
        return Reporter()
    if sys.stdout.isatty():
        return RichReporter()
    return PlainReporter()


def _row_text(row: dict[str, Any]) -> str:
    text = (f"{row.get('stage', 'phase')} {row.get('phase')}: density {row['density']:.4f} "
            f"val acc {row['val_acc']:.4f} cost {row['cost_flops']:.3f}x dense FLOPs / "
            f"{row['cost_epochs']:.3f}x dense epochs")
    fit = row.get("fit")
    if fit and fit.get("identifiable") and fit.get("rho_star") is not None:
        text += f" | fit rho* {fit['rho_star']:.4f}"
    if row.get("decision"):
        text += f" -> {row['decision']}"
    return text


def terminal_width() -> int:
    """Columns of the terminal (``COLUMNS`` when set; 80 when there is no terminal)."""
    return shutil.get_terminal_size((80, 24)).columns


def fit_parts(parts: list[str], width: int | None = None, sep: str = " · ") -> str:
    """``parts`` joined by ``sep`` on as few lines as fit ``width`` columns, breaking only between parts
    (a part longer than a line gets a line of its own); continuation lines are indented by 2."""
    width = max(20, width or terminal_width())
    lines: list[str] = []
    line = ""
    for part in parts:
        if line and len(line) + len(sep) + len(part) > width:
            lines.append(line)
            line = "  " + part
        else:
            line = f"{line}{sep}{part}" if line else part
    lines.append(line)
    return "\n".join(lines)


def result_line(summary: dict[str, Any], width: int | None = None) -> str:
    """The final result of a run (fresh or resumed), fitted to the terminal width."""
    parts = [f"discovered density {summary['discovered_density']:.4f}", f"test accuracy {summary['test_acc']:.4f}",
             f"cost {summary['cost_flops']:.2f}x dense FLOPs ({summary['cost_epochs']:.2f}x dense epochs)",
             f"stop: {summary['stop_reason']}", f"run folder {summary['run_dir']}"]
    return fit_parts(parts, width)
