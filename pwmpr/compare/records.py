"""Reading finished run folders and grouping them by configuration, with the statistics over seeds."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pwmpr import rundir
from pwmpr.config import RunConfig
from pwmpr.data import context_of
from pwmpr.errors import PwmprError
from pwmpr.methods import METHODS
from pwmpr.stop.decision import growth_rows

# Config keys that never change what a run computes: runs differing only in these are seeds of one configuration.
_NOT_CONFIG = ("seed", "device", "data_dir", "version")


def normalised_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` as today's pwmpr writes it (defaults filled in, version-1 folders migrated) in the form where two
    configs that train alike are equal (``RunConfig.canonical``); a config this pwmpr cannot read is left as it is."""
    try:
        cfg = RunConfig.from_dict(config)
        method = METHODS.get(cfg.method) if cfg.method in METHODS else None
        has_final = method.has_final if method is not None else True
        canonical = cfg.canonical(final_training=has_final and cfg.final_epochs > 0,
                                  growth_stop=method.stops_growth if method is not None else True)
    except PwmprError:
        return config
    canonical["context"] = context_of(canonical["data"], canonical["context"])  # unset: the loader's default
    return canonical


@dataclass
class RunRecord:
    """One finished run folder: its config, summary and history as written by the runner."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    history: list[dict[str, Any]]

    @property
    def method(self) -> str:
        return self.config.get("method", self.summary.get("method", "?"))

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", self.summary.get("seed", 0)))

    @property
    def options(self) -> dict[str, Any]:
        return self.config.get("options") or {}

    @property
    def variant(self) -> str:
        """The growth rule (pwmpr, with ``+zeta..`` and ``+shrink`` when on), IMP variant, one-shot pruner, or the
        layer distribution and density of RigL/SET; empty for dense."""
        if self.method == "pwmpr":
            growth = self.config.get("growth") or {}
            extras = [f"zeta{growth['zeta']:g}"] if growth.get("zeta") else []
            extras += ["shrink"] if (self.config.get("shrink") or {}).get("enabled") else []
            return "+".join([growth.get("rule", "pwmp"), *extras])
        if self.method in ("rigl", "set"):
            return f"{self.options.get('distribution', 'erk')}@{self.options.get('density', 0.1):.3g}"
        if self.method == "imp":
            return self.options.get("variant", "lr-rewind")
        if self.method == "oneshot":
            return f"{self.options.get('pruner', 'phew')}@{self.options.get('density', 0.1):.3g}"
        return ""

    @property
    def setting(self) -> tuple[str, str]:
        """(model, data): only runs of one setting are compared in a claim; the data name carries the context of
        text read in windows other than its loader's default (``pydoc-text@64``)."""
        data = str(self.config.get("data", self.summary.get("data")))
        context = self.config.get("context")
        if context is not None and context != context_of(data, None):
            data = f"{data}@{context}"
        return str(self.config.get("model", self.summary.get("model"))), data

    def group_key(self) -> str:
        """The config minus seed, device and data folder, as canonical JSON, with defaults filled in (an old run
        folder and a new one of the same settings match) and the learning rate that was used."""
        config = normalised_config(self.config)
        return json.dumps({k: v for k, v in config.items() if k not in _NOT_CONFIG}, sort_keys=True)

    def phases(self) -> list[dict[str, Any]]:
        """History rows of the phases (IMP levels, growth phases), without the shrink stage and the final training."""
        return growth_rows(self.history)



def read_run(path: Path | str) -> RunRecord:
    """Read a finished run folder through the strict readers a run uses (its config as ``grow --config`` reads it,
    its summary and history checked); anything else raises PwmprError naming the folder and what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise PwmprError(f"{path} is not a run folder (not a directory)")
    if not (path / rundir.CONFIG).is_file():
        raise PwmprError(f"{path} is not a run folder: it has no {rundir.CONFIG}")
    summary = rundir.read_summary(path)
    if summary.get("test_acc") is None:
        raise PwmprError(f"{path / rundir.SUMMARY} has no test accuracy (the run had no test split): nothing to "
                         "compare")
    try:
        config = RunConfig.load(path / rundir.CONFIG).to_dict()
    except PwmprError as exc:
        raise PwmprError(f"{path / rundir.CONFIG}: {exc}") from None
    return RunRecord(path, config, summary, read_checked_history(path))


#: History entries that must be finite numbers when present (``density`` always).
_ROW_NUMBERS = ("val_acc", "test_acc", "cost_flops", "cost_epochs")


def read_checked_history(path: Path) -> list[dict[str, Any]]:
    """The rows of a run folder's history.jsonl, each checked: a JSON object with a ``stage`` and a finite
    ``density`` (and finite accuracies and costs where it has them); else PwmprError naming the line."""
    file = Path(path) / rundir.HISTORY
    try:
        lines = file.read_text().splitlines() if file.exists() else []
    except (OSError, UnicodeDecodeError) as exc:
        raise PwmprError(f"cannot read {file}: {exc}") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise PwmprError(f"{file} line {n} is not JSON: {exc}") from None
        if not isinstance(row, dict) or not isinstance(row.get("stage"), str):
            raise PwmprError(f"{file} line {n} must be a JSON object with a stage, got {line[:60]}")
        for key in ("density", *_ROW_NUMBERS):
            v = row.get(key)
            if (key == "density" or v is not None) and (isinstance(v, bool) or not isinstance(v, (int, float))
                                                         or not math.isfinite(v)):
                raise PwmprError(f"{file} line {n}: {key} must be a finite number, got {json.dumps(v)}")
        rows.append(row)
    return rows




@dataclass
class Stat:
    """Mean and sample standard deviation (0 for one value) of the values that were present."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stat:
        vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        if not vals:
            return cls(None, None, 0)
        return cls(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals))

    @property
    def sem(self) -> float | None:
        """Standard error of the mean (None without values)."""
        if self.mean is None or self.std is None:
            return None
        return self.std / math.sqrt(self.n)


def tau_ratio(row_or_summary: dict[str, Any]) -> float | None:
    tc = row_or_summary.get("tau_core")
    return tc.get("ratio") if isinstance(tc, dict) else None


@dataclass
class Group:
    """The runs of one configuration (several seeds): one row of the table."""

    label: str
    method: str
    variant: str
    setting: tuple[str, str]
    runs: list[RunRecord]

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs)

    def stat(self, key: str) -> Stat:
        """Mean and std over the runs of ``summary[key]``."""
        return Stat.of(r.summary.get(key) for r in self.runs)

    def tau_ratio(self) -> Stat:
        """Tau-core ratio (core size / hidden units) of the final networks."""
        return Stat.of(tau_ratio(r.summary) for r in self.runs)

    def reference_epochs(self) -> list[int]:
        return sorted({int(r.summary.get("dense_reference_epochs") or 0) for r in self.runs})

    def levels(self) -> list[dict[str, Any]]:
        """The accuracy-density curve averaged over seeds level by level (over the seeds that reached each level).

        Each entry: ``level``, ``density`` and :class:`Stat` of ``test_acc``, ``val_acc``, costs and ``tau``.
        """
        n = max((len(r.phases()) for r in self.runs), default=0)
        out = []
        for i in range(n):
            rows = [r.phases()[i] for r in self.runs if len(r.phases()) > i]
            out.append({
                "level": i,
                "density": Stat.of(x["density"] for x in rows),
                "test_acc": Stat.of(x.get("test_acc") for x in rows),
                "val_acc": Stat.of(x.get("val_acc") for x in rows),
                "cost_flops": Stat.of(x.get("cost_flops") for x in rows),
                "cost_epochs": Stat.of(x.get("cost_epochs") for x in rows),
                "tau": Stat.of(tau_ratio(x) for x in rows),
            })
        return out

    def best_tickets(self) -> list[dict[str, Any]]:
        """Per run, the phase with the highest validation accuracy (IMP's best ticket) that has a test accuracy."""
        best = []
        for r in self.runs:
            rows = [x for x in r.phases() if x.get("test_acc") is not None]
            if rows:
                b = max(rows, key=lambda x: (x["val_acc"], -x["density"]))
                best.append({"seed": r.seed, "level": r.phases().index(b), "density": b["density"],
                             "val_acc": b["val_acc"], "test_acc": b["test_acc"], "cost_flops": b["cost_flops"],
                             "cost_epochs": b["cost_epochs"]})
        return best


def _label(run: RunRecord) -> str:
    return f"{run.method}/{run.variant}" if run.variant else run.method


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


#: The longest option list a label carries; beyond it the label names the first run folder instead.
MAX_LABEL_OPTIONS = 3


def distinguishing(configs: Sequence[dict[str, Any]]) -> list[str] | None:
    """For configs whose groups share a label, what tells each apart: the options whose values differ
    (``stop.rule=paper, stop.max_cost=0``); None when more than :data:`MAX_LABEL_OPTIONS` differ."""
    flat = [_flat(c) for c in configs]
    keys = sorted({k for f in flat for k in f})
    differ = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1]
    if len(differ) > MAX_LABEL_OPTIONS:
        return None
    return [", ".join(f"{k}={_short(f.get(k))}" for k in differ) for f in flat]


def _folders(groups: Sequence[Group]) -> list[str]:
    """Each group's first run folder (its name, or its path where two names are alike), for a label."""
    names = [g.runs[0].path.name for g in groups]
    if len(set(names)) < len(names):
        names = [str(g.runs[0].path) for g in groups]
    return [f"run {n}" + (f" and {len(g.runs) - 1} more" if len(g.runs) > 1 else "")
            for n, g in zip(names, groups, strict=True)]


def _short(v: Any) -> str:
    return "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def group_runs(runs: Sequence[RunRecord]) -> list[Group]:
    """Group runs by config minus seed; labels are ``method/variant``, made unique with the options that differ
    between groups of one label (:func:`distinguishing`)."""
    by_key: dict[str, list[RunRecord]] = {}
    for r in runs:
        by_key.setdefault(r.group_key(), []).append(r)
    groups = [Group(_label(rs[0]), rs[0].method, rs[0].variant, rs[0].setting, sorted(rs, key=lambda r: r.seed))
              for rs in by_key.values()]
    settings = {g.setting for g in groups}
    for g in groups:
        if len(settings) > 1:
            g.label = f"{g.label} [{g.setting[0]}·{g.setting[1]}]"
    same: dict[str, list[tuple[str, Group]]] = {}
    for key, g in zip(by_key, groups, strict=True):
        same.setdefault(g.label, []).append((key, g))
    for twins in same.values():
        if len(twins) > 1:
            gs = [g for _, g in twins]
            extras = distinguishing([json.loads(k) for k, _ in twins]) or _folders(gs)
            for g, extra in zip(gs, extras, strict=True):
                g.label = f"{g.label} ({extra})"
    order = {"pwmpr": 0, "imp": 1, "rigl": 2, "set": 3, "oneshot": 4, "dense": 5}
    return sorted(groups, key=lambda g: (g.setting, order.get(g.method, 9), g.label))

