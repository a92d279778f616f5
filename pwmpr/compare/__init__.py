"""``pwmpr compare``: finished run folders -> one table, two plots, and the paper's claims checked.

Runs are grouped by their config minus seed, device and data folder; a sweep folder among the paths is the
ground truth for density discovery (``pwmpr.discovery``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pwmpr import rundir
from pwmpr.compare.claims import Claim, check_claims, matched_differences
from pwmpr.compare.records import Group, RunRecord, Stat, group_runs, normalised_config, read_run
from pwmpr.compare.report import (
    claims_markdown,
    csv_text,
    display_row,
    levels_markdown,
    markdown_table,
    plot_comparison,
    table_rows,
)
from pwmpr.errors import PwmprError

#: The training settings a sweep must share with a run to be its ground truth (``train`` keys, lr as used).
TRAINED_ON = ("optimizer", "lr", "momentum", "weight_decay", "batch_size", "final_schedule")

__all__ = ["Claim", "Comparison", "Group", "RunRecord", "Stat", "check_claims", "compare", "csv_text",
           "discovery_rows", "display_row", "group_runs", "markdown_table", "matched_differences", "read_run"]


@dataclass
class Comparison:
    """What ``compare`` produced: the groups, table rows, claims per setting, notes and the files written."""

    groups: list[Group]
    rows: list[dict[str, Any]]
    claims: dict[str, list[Claim]]
    notes: list[str]
    files: list[Path]
    discovery: list[dict[str, Any]] = field(default_factory=list)



def compare(paths: Sequence[Path | str], out_dir: Path | str | None = None, *, plots: bool = True) -> Comparison:
    """Read run folders, group seeds, build the table, check the claims, write the files into ``out_dir``.

    Writes ``compare.md``, ``compare.csv``, ``compare.json`` and, with ``plots``, ``acc_vs_density.png`` and
    ``acc_vs_cost.png``. PwmprError: a path that is not a finished run folder, or no paths at all.
    """
    if not paths:
        raise PwmprError("give at least one run folder to compare")
    from pwmpr import sweep as sweeps_mod

    sweeps = [Path(p) for p in paths if sweeps_mod.is_sweep(p)]
    runs = [read_run(p) for p in paths if not sweeps_mod.is_sweep(p)]
    if not runs:
        raise PwmprError("give at least one run folder to compare (sweep folders are only the reference)")
    seen: dict[Path, Path] = {}
    for r in runs:
        real = r.path.resolve()
        if real in seen:
            raise PwmprError(f"run folder {r.path} is given twice")
        seen[real] = r.path
    same: dict[tuple[str, int], RunRecord] = {}
    for r in runs:
        twin = same.setdefault((r.group_key(), r.seed), r)
        if twin is not r:
            raise PwmprError(f"{twin.path} and {r.path} are the same configuration with the same seed {r.seed} "
                             "(they differ only in their folder), so they are not two seeds: give one of them")
    groups = group_runs(runs)
    rows = table_rows(groups)
    notes = []
    claims: dict[str, list[Claim]] = {}
    for setting in sorted({g.setting for g in groups}):
        gs = [g for g in groups if g.setting == setting]
        refs = sorted({e for g in gs for e in g.reference_epochs()})
        if len(refs) > 1:
            notes.append(f"{setting[0]} on {setting[1]}: costs are relative to dense runs of different lengths "
                         f"({', '.join(map(str, refs))} epochs); compare cost columns with care")
        claims[f"{setting[0]} on {setting[1]}"] = check_claims(gs)
    discovery = discovery_rows(runs, sweeps)
    unscored = sum(r.method == "pwmpr" for r in runs) - len(discovery)
    if sweeps and unscored:
        notes.append(f"{unscored} PWMPR run(s) not scored for density discovery: no sweep given of the same model, "
                     "data, split, epochs and training settings (" + ", ".join(TRAINED_ON) + ")")
    files: list[Path] = []
    if out_dir is not None:
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise PwmprError(f"output path {out} exists and is not a directory")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PwmprError(f"--out {out} cannot be created: {exc.strerror or exc}") from None
        md = ["# pwmpr compare\n", markdown_table(rows), "\nClaims of the paper, measured:\n", claims_markdown(claims)]
        md += [f"\nNote: {n}\n" for n in notes]
        if discovery:
            from pwmpr.discovery import LOWER_BOUND_NOTE
            from pwmpr.discovery import markdown as discovery_markdown

            md += ["\nDensity discovery against the sweep of the same model and data (hit: within 1 point of the "
                   "sweep's best test accuracy, at most 2x its knee density, cheaper than IMP to the same "
                   f"density; {LOWER_BOUND_NOTE}):\n",
                   discovery_markdown(discovery)]
        if any(g.method == "imp" for g in groups):
            md += ["\nIMP accuracy-density curves (every level is a trained ticket):\n", levels_markdown(groups)]
        rundir.atomic_write_text(out / "compare.md", "\n".join(md))
        rundir.atomic_write_text(out / "compare.csv", csv_text(rows))
        payload = {"rows": rows, "discovery": discovery,
                   "claims": {k: [asdict(c) for c in v] for k, v in claims.items()}, "notes": notes,
                   "levels": {g.label: [{k: (asdict(v) if isinstance(v, Stat) else v) for k, v in x.items()}
                                        for x in g.levels()] for g in groups}}
        rundir.atomic_write_json(out / "compare.json", payload)
        files = [out / "compare.md", out / "compare.csv", out / "compare.json"]
        if plots:
            files += plot_comparison(groups, out, [sweeps_mod.summarise(p, sweeps_mod.load_config(p)) for p in sweeps])
    return Comparison(groups, rows, claims, notes, files, discovery)


def discovery_rows(runs: Sequence[RunRecord], sweeps: Sequence[Path]) -> list[dict[str, Any]]:
    """``pwmpr.discovery.score`` of every PWMPR run that has a sweep of the same model and data, context included
    (and the IMP run of that setting with the smallest seed, where one is given)."""
    from pwmpr import discovery
    from pwmpr import sweep as sweeps_mod

    def setting(model, config: dict) -> tuple:
        # What makes a sweep the ground truth of a run: model and data, and how the data are split and trained on
        # (the optimizer with the learning rate in effect, decay, batch and schedule of the final training).
        normalised = normalised_config(config)
        train = normalised.get("train") or {}
        return (model, config.get("data"), normalised.get("context"), config.get("max_train"),
                config.get("val_fraction"), config.get("final_epochs"), *(train.get(k) for k in TRAINED_ON))

    by_setting = {}
    for path in sweeps:  # the curve and knee are computed from the points, not taken from summary.json
        cfg = sweeps_mod.load_config(path)
        summary = sweeps_mod.summarise(path, cfg)
        by_setting.setdefault(setting(summary["model"], cfg.base.to_dict()), summary)
    imps = sorted((r for r in runs if r.method == "imp"), key=lambda r: r.seed)
    out = []
    for r in runs:
        sweep = by_setting.get(setting(r.summary.get("model"), r.config))
        if r.method != "pwmpr" or sweep is None:
            continue
        # IMP of the same setting: the same seed where there is one, else the smallest seed.
        same = [i for i in imps if i.setting == r.setting]
        imp = next((i for i in same if i.seed == r.seed), same[0] if same else None)
        out.append({"run": str(r.path), "seed": r.seed, "sweep_complete": bool(sweep.get("complete")),
                    **discovery.score(r.summary, sweep, imp.history if imp is not None else None)})
    return out
