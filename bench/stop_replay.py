"""Replay every stop rule of bench/settings/stop_replay.json on whole growth trajectories (bench/stop_replay.sh).

For each trajectory (a run grown with ``--stop none`` to density 1) and each rule, the phases are fed one at a time
to pwmpr's own stop sequence (``pwmpr.stop.sequence.growth_stop``) and cost guard (``pwmpr.cost.projected_cost``,
re-costed for ``--final-epochs``); the first stop is where that rule's run would have stopped. The report scores
that density against the knee of the pair's sweep: **in window** means at least the knee and at most 2x it, with the
cost at most 1.5 dense runs (bench/discovery.sh's hit has no lower bound on density; it asks for the test accuracy
instead, which a replay cannot give).

    python bench/stop_replay.py --out bench/out/stop-replay --sweeps bench/out/discovery
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import ROOT, header, quote_report  # noqa: E402

RUN_RE = re.compile(r"(?P<pair>.+)-sd(?P<sd>[0-9.]+)-s(?P<seed>\d+)$")
MAX_COST = 1.5


def replay(rows: list[dict], stop, *, num_classes: int, phase_epochs: int, final_epochs: int,
           reference_epochs: int, end: str) -> tuple[int, str, float]:
    """(index of the phase where the run stops, the reason, the run's total cost in dense runs) for one rule;
    ``end`` is the reason the trajectory itself ended (no growth candidates, max density)."""
    from pwmpr.cost import projected_cost
    from pwmpr.errors import PwmprError
    from pwmpr.stop.sequence import growth_stop

    scale = reference_epochs / final_epochs
    seen: list[dict] = []  # the rows as the runner records them: each with what the stop sequence added
    for k in range(1, len(rows) + 1):
        row = rows[k - 1]
        seen.append(dict(row))
        try:
            verdict = growth_stop(seen, stop, num_classes, row["density"])
        except PwmprError:  # the rule's fit failed in too many phases in a row: the run ends with an error
            return k - 1, "error: stop fit failed", projected_cost(row, sparse_fwd=row["fwd_flops_sparse"],
                                                                   epochs=0) * scale
        seen[-1].update(verdict.info)
        final = projected_cost(row, sparse_fwd=row["fwd_flops_sparse"], epochs=final_epochs) * scale
        if verdict.reason is not None:
            return k - 1, verdict.reason, final
        if k < len(rows) and stop.max_cost:
            ahead = projected_cost(row, sparse_fwd=rows[k]["fwd_flops_sparse"], epochs=phase_epochs + final_epochs)
            if ahead * scale > stop.max_cost:
                return k - 1, "max-cost", final
    return len(rows) - 1, end, final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out/stop-replay")
    parser.add_argument("--sweeps", type=Path, default=ROOT / "bench/out/discovery")
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results/stop-replay.md")
    parser.add_argument("--final-epochs", type=int, default=30)
    parser.add_argument("--phase-epochs", type=int, default=10)
    parser.add_argument("--command", default="bash bench/stop_replay.sh")
    parser.add_argument("--rules", default="stop_replay", help="the bench/settings file whose rules are replayed")
    args = parser.parse_args()

    from functools import cache

    from pwmpr.config import StopConfig
    from pwmpr.data import load_data

    classes = cache(lambda data: load_data(data).num_classes)  # the chance level the curve rules bound by

    rules_file = ROOT / f"bench/settings/{args.rules}.json"
    rules = json.loads(rules_file.read_text()).get("rules") if rules_file.is_file() else None
    if not rules:
        sys.exit(f"stop_replay.py: --rules {args.rules}: {rules_file} has no \"rules\" to replay")
    table: dict[tuple[str, str, float], list[dict]] = {}
    for run in sorted(p for p in args.out.iterdir() if (p / "history.jsonl").is_file()):
        m = RUN_RE.match(run.name)
        sweep_file = args.sweeps / m["pair"] / "sweep" / "summary.json" if m else None
        if not m or not sweep_file.is_file():
            print(f"stop_replay.py: {run.name}: no sweep at {sweep_file}; skipped", file=sys.stderr)
            continue
        sweep = json.loads(sweep_file.read_text())
        config = json.loads((run / "config.json").read_text())
        summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
        rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
        rows = [r for r in rows if r.get("stage") == "phase"]
        knee = sweep["knee"]["density"]
        for name, fields in rules.items():
            stop = StopConfig(**{**fields, "max_cost": MAX_COST})
            i, reason, cost = replay(rows, stop, num_classes=classes(config["data"]),
                                     phase_epochs=args.phase_epochs, final_epochs=args.final_epochs,
                                     reference_epochs=summary.get("dense_reference_epochs") or config["final_epochs"],
                                     end=summary.get("stop_reason", "end of trajectory"))
            density = rows[i]["density"]
            table.setdefault((name, m["pair"], float(m["sd"])), []).append({
                "density": density, "knee": knee, "reason": reason, "cost": cost, "val": rows[i]["val_acc"],
                "below": density < knee - 1e-9, "above": density > 2 * knee + 1e-9,
                "window": knee - 1e-9 <= density <= 2 * knee + 1e-9 and cost <= MAX_COST + 1e-9})
    lines = header(args.command) + [
        "Each trajectory is a run grown with `--stop none` to density 1; every rule is replayed on it through pwmpr's "
        "own stop sequence and cost guard (1.5 dense runs, final training of "
        f"{args.final_epochs} epochs). **In window**: stopped at a density from the sweep's knee to 2x the knee, at "
        "a cost of at most 1.5 dense runs. Final training is not replayed: test accuracy is bench/discovery.sh's "
        "(where growth can reach the sweep's best below its knee, as on teacher from a 1% seed).", "",
        "| rule | runs in window | share | below the knee | above 2x the knee | median density / knee | mean cost "
        "(x dense) | stop reasons |",
        "|---|---|---|---|---|---|---|---|"]
    for name in rules:
        runs = [r for (n, _, _), rs in table.items() if n == name for r in rs]
        if not runs:
            continue
        inside = sum(r["window"] for r in runs)
        reasons: dict[str, int] = {}
        for r in runs:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        lines.append(f"| {name} | {inside}/{len(runs)} | {inside / len(runs):.0%} | {sum(r['below'] for r in runs)} | "
                     f"{sum(r['above'] for r in runs)} | "
                     f"{statistics.median(r['density'] / r['knee'] for r in runs):.2f} | "
                     f"{statistics.mean(r['cost'] for r in runs):.2f} | "
                     + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) + " |")
    lines += ["", "Per pair and seed density (runs in window; stop densities of the seeds):", "",
              "| rule | pair | knee | seed density | in window | stop densities |", "|---|---|---|---|---|---|"]
    order = list(rules)
    for (name, pair, sd), runs in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][2], order.index(kv[0][0]))):
        stops = ", ".join(f"{r['density']:.3f}" for r in runs)
        lines.append(f"| {name} | {pair} | {runs[0]['knee']:g} | {sd:g} | {sum(r['window'] for r in runs)}/"
                     f"{len(runs)} | {stops} |")
    text = "\n".join(lines) + "\n"
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    quote_report(args.results, {args.results.stem: text}, docs=("bench/RESULTS.md",))  # stop-replay(-heldout)
    print(text)


if __name__ == "__main__":
    main()
