"""Read the runs of bench/attention.sh and write bench/results/attention.md and attention.png (called by the script).

For every growth rule, over seeds: discovered density, final test accuracy, cost (training FLOPs x one dense run),
the share of query/key weights among the edges grown after the seed, and the accuracy-density curve of the
rough-training phases. The verdict names the rule with the highest mean test accuracy and says whether its lead
over each other rule, paired by seed, exceeds the standard error of the difference; no figure is typed by hand.

    python bench/attention.py --out bench/out/attention --results bench/results/attention.md
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import ROOT, finished_run, header, mean_std, paired, quote_into  # noqa: E402

RULES = {
    "pwmp": "PWMP alone (q/k never grown)",
    "pwmp-attn": "PWMP through the real attention",
    "pwmp-qk-gradient": "PWMP + q/k by gradient (RigL)",
    "pwmp-qk-head": "PWMP + q/k by head importance",
    "pwmp-qk-random": "PWMP + q/k random",
}
RUN_RE = re.compile(r"(?P<rule>.+)-sd(?P<sd>[0-9.]+)-s(?P<seed>\d+)$")
QK = (".q.weight", ".k.weight")


def _sizes(run: Path) -> dict[str, int]:
    """Entries of every masked weight of a finished run, read from the mask shapes in its final.safetensors."""
    from math import prod

    from safetensors import safe_open

    with safe_open(str(run / "final.safetensors"), "pt") as f:
        names = [k for k in f.keys() if k.startswith("mask/")]  # noqa: SIM118 (safe_open is not iterable)
        return {k.removeprefix("mask/"): prod(f.get_slice(k).get_shape()) for k in names}


def _qk_nnz(layer_density: dict[str, float], sizes: dict[str, int]) -> tuple[float, float]:
    """(kept q/k edges, kept edges of all layers) from a history row's per-layer densities."""
    qk = sum(d * sizes[n] for n, d in layer_density.items() if n.endswith(QK))
    return qk, sum(d * sizes[n] for n, d in layer_density.items())


def collect(out: Path) -> list[dict]:
    """One record per finished run under ``out/<data>-<model>/<rule>-sd<density>-s<seed>``."""
    rows = []
    for pair in sorted(p for p in out.iterdir() if p.is_dir()):
        for run in sorted(p for p in pair.iterdir() if p.is_dir()):
            m = RUN_RE.match(run.name)
            read = finished_run(run) if m else None
            if read is None:
                continue
            summary, history = read
            phases = [r for r in history if r.get("stage") == "phase"]
            sizes = _sizes(run)
            qk0, all0 = _qk_nnz(phases[0]["layer_density"], sizes)
            qk1, all1 = _qk_nnz(summary["layer_density"], sizes)
            qk_total = sum(v for n, v in sizes.items() if n.endswith(QK))
            rows.append({
                "pair": pair.name, "rule": m["rule"], "seed": int(m["seed"]), "seed_density": float(m["sd"]),
                "discovered_density": summary["discovered_density"], "test_acc": summary["test_acc"],
                "cost_flops": summary["cost_flops"], "stop_reason": summary["stop_reason"],
                "n_phases": summary["n_phases"],
                "qk_share_grown": (qk1 - qk0) / (all1 - all0) if all1 > all0 else 0.0,
                "qk_density": qk1 / qk_total if qk_total else 0.0,
                "curve": [(r["density"], r["val_acc"]) for r in phases],
            })
    return rows


def unfinished(out: Path) -> list[str]:
    """Run folders that exist but have no summary.json yet."""
    return sorted(f"{p.parent.name}/{p.name}" for p in out.glob("*/*")
                  if p.is_dir() and RUN_RE.match(p.name) and not (p / "summary.json").is_file())


def settings(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    """(label, runs) per (pair, seed density) of ``rows``; the label names the seed density when there are several
    settings."""
    keys = sorted({(x["pair"], x["seed_density"]) for x in rows})
    return [(pair if len(keys) == 1 else f"{pair}, seed density {sd:g}",
             [x for x in rows if (x["pair"], x["seed_density"]) == (pair, sd)]) for pair, sd in keys]


def verdict(rows: list[dict]) -> str:
    """The verdict of every (pair, seed density) of ``rows``, one paragraph each (:func:`verdict_of`)."""
    groups = settings(rows)
    if len(groups) <= 1:
        return verdict_of(rows)
    return "\n\n".join(f"{label}: " + verdict_of(runs) for label, runs in groups)


def verdict_of(rows: list[dict]) -> str:
    """Which rule has the highest mean test accuracy, and by how much it leads each other rule: the mean ± standard
    error of the accuracy difference paired by seed (every rule starts from the same seed network and weights), a
    lead counting only beyond one standard error (docs/method.md, "Judging the paper's claims"). Only the seeds that
    every rule finished count, so the best rule's lead is measured on the seeds it was picked on."""
    by_rule = {r: {x["seed"]: 100 * x["test_acc"] for x in rows if x["rule"] == r} for r in RULES}
    by_rule = {r: accs for r, accs in by_rule.items() if accs}
    if not by_rule:
        return "Verdict: no finished run."
    common = set.intersection(*(set(accs) for accs in by_rule.values()))
    if not common:
        return "Verdict: no seed that every rule finished."
    dropped = sorted(set().union(*(set(accs) for accs in by_rule.values())) - common)
    by_rule = {r: {s: a for s, a in accs.items() if s in common} for r, accs in by_rule.items()}
    best = max(by_rule, key=lambda r: statistics.fmean(by_rule[r].values()))
    parts, clear_all = [], True
    for rule, accs in by_rule.items():
        if rule == best:
            continue
        m, se, n = paired(by_rule[best], accs)
        clear = n > 1 and m > se
        clear_all &= clear
        if n > 1:
            parts.append(f"{rule} by {m:+.2f} ± {se:.2f} points (s.e. over {n} paired seeds): "
                         f"{'beyond' if clear else 'within'} the spread")
        else:
            parts.append(f"{rule} by {m:+.2f} points on one seed: undecided")
    head = f"Verdict (computed): the highest mean final test accuracy is {best}'s ({RULES[best]})"
    if dropped:
        head += f" on the seeds every rule finished (not counted: seed {', '.join(map(str, dropped))})"
    if not parts:
        return head + "."
    return (f"{head}; it leads {'; '.join(parts)}. "
            + ("It wins beyond the spread over seeds against every other rule." if clear_all
               else "Its lead is not beyond the spread over seeds against at least one rule."))


def render(rows: list[dict], command: str, elapsed: float | None, figure: str | None, missing: list[str]) -> str:
    """The markdown of bench/results/attention.md."""
    lines = [
        *header(command, f"{elapsed / 60:.0f} min of runs" if elapsed else ""),
        "Growth rules for attention's query and key weights (docs/method.md, \"Attention: growing q and k\"), "
        "PWMPR from the same seed density and seed network, everything else as the command above says (pwmpr grow's "
        "defaults where it says nothing). Mean ± std over seeds; "
        "cost is total training FLOPs x one dense run of the final epochs; q/k share is the share of query and key "
        "weights among the edges grown after the seed (q and k are 25% of vit-mini's prunable weights).",
        "",
        "| pair | growth rule | runs | discovered density | final test accuracy | cost (x dense FLOPs) "
        "| q/k share of grown edges | final q/k density | stop reasons |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for pair, runs in settings(rows):
        for rule in RULES:
            rs = [x for x in runs if x["rule"] == rule]
            if not rs:
                continue
            reasons: dict[str, int] = {}
            for x in rs:
                reasons[x["stop_reason"]] = reasons.get(x["stop_reason"], 0) + 1
            lines.append(
                f"| {pair} | {rule} | {len(rs)} | {mean_std([x['discovered_density'] for x in rs], '.4f')} | "
                f"{mean_std([100 * x['test_acc'] for x in rs], '.2f')}% | "
                f"{mean_std([x['cost_flops'] for x in rs], '.2f')} | "
                f"{mean_std([100 * x['qk_share_grown'] for x in rs], '.1f')}% | "
                f"{mean_std([x['qk_density'] for x in rs], '.4f')} | "
                + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) + " |")
    capped = sum(x["stop_reason"] == "max-phases" for x in rows)
    if capped:
        lines += ["", f"{capped} of {len(rows)} runs ended on --max-phases, not on the stop rule: there the "
                  "discovered density is the cap, equal for every rule, and the table compares the rules' accuracy "
                  "at equal density rather than the densities they would discover."]
    lines += ["", verdict(rows)]
    if missing:
        lines += ["", "Runs not finished: " + ", ".join(missing) + "."]
    if figure:
        lines += ["", f"![validation accuracy against density, per rule and seed]({figure})", "",
                  "The figure: validation accuracy after each rough-training phase against the density it trained "
                  "at (one line per run, one colour per rule)."]
    lines += ["", "Curves (validation accuracy after each phase; density: accuracy), per run:", ""]
    for x in sorted(rows, key=lambda x: (x["pair"], list(RULES).index(x["rule"]) if x["rule"] in RULES else 99,
                                         x["seed"])):
        pts = ", ".join(f"{d:.4f}: {100 * a:.1f}%" for d, a in x["curve"])
        lines.append(f"- {x['pair']} {x['rule']} seed {x['seed']}: {pts}")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """Validation accuracy against density (log axis), one line per run, one colour per rule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = dict(zip(RULES, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    seen = set()
    for x in rows:
        d, a = zip(*x["curve"], strict=True)
        label = x["rule"] if x["rule"] not in seen else None
        seen.add(x["rule"])
        ax.plot(d, [100 * v for v in a], marker="o", ms=3, lw=1, color=colours.get(x["rule"]), label=label)
        ax.scatter([x["discovered_density"]], [100 * x["test_acc"]], marker="*", s=60, color=colours.get(x["rule"]))
    ax.set_xscale("log")
    ax.set_xlabel("density")
    ax.set_ylabel("accuracy (%): lines validation per phase, stars final test")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    """Collect the runs, write the table, the JSON of every run and the figure, and quote the table in the docs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out/attention")
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results/attention.md")
    parser.add_argument("--command", default="bash bench/attention.sh")
    parser.add_argument("--elapsed", type=float, default=None)
    parser.add_argument("--no-quote", action="store_true", help="do not update bench/RESULTS.md")
    args = parser.parse_args()
    rows = collect(args.out)
    if not rows:
        sys.exit(f"attention.py: no finished run under {args.out}")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    figure = args.results.with_suffix(".png")
    plot(rows, figure)
    text = render(rows, args.command, args.elapsed, figure.name, unfinished(args.out))
    args.results.write_text(text)
    args.results.with_suffix(".json").write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    print(text)
    if not args.no_quote and args.results.resolve() == (ROOT / "bench/results/attention.md").resolve():
        quote_into(ROOT / "bench/RESULTS.md", "attention", text)


if __name__ == "__main__":
    main()
