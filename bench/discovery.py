"""Score the runs of bench/discovery.sh and write bench/results/discovery.md (called by the script).

Every PWMPR run is scored against the sweep of its data/model pair (``pwmpr.discovery.score``): a hit lands
within 1 point of the sweep's best mean test accuracy, at a density at most 2x the sweep's knee, for a total
training cost (FLOPs) of at most 1.5 dense runs and below IMP's cost to the same density. The headline figure is
the share of hits per variant (``bench/discovery.sh``); the 2-thread reruns give the stability of the discovered
density. The file is then quoted between markers in bench/RESULTS.md and README.md, so no figure is typed by hand.

    python bench/discovery.py --out bench/out/discovery --results bench/results/discovery.md
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import ROOT, header, quote_report  # noqa: E402

RULE_NAMES = {
    "explore": "recruiting growth (`--growth pwmp-explore`)",
    "explore-reinit": "recruiting growth, the grown mask from the initial weights (`--growth pwmp-explore "
                      "--final-init reinit`)",
    "explore-fanin": "recruiting growth, each seeded unit's kept weights scaled to its fan-in (`--growth "
                     "pwmp-explore --init-scale fan-in`)",
    "warmup": "recruiting growth with a one-epoch learning-rate warm-up wherever training restarts from trained "
              "weights (`--growth pwmp-explore --warmup-epochs 1`)",
    "pwmp": "PWMP growth alone, the paper's rule (`--growth pwmp`)",
    "resolved": "PWMP growth with the plateau test's window widened to what the validation set resolves "
                "(`--growth pwmp --plateau-resolve`)",
    "continue": "PWMP growth, final training from the grown weights (`--growth pwmp --final-init continue`)",
    "reinit": "PWMP growth, the grown mask from the initial weights (`--growth pwmp --final-init reinit`)",
    "rewind": "PWMP growth, seed edges rewound and grown ones at zero (`--growth pwmp --final-init rewind`)",
    "gain-guarded": "gain rule + 1-point plateau fallback, continue (`--stop gain --plateau-tol 0.01 --final-init "
                    "continue --no-plateau-resolve --growth pwmp`)",
    "no-guard": "no cost guard (`--max-cost 0`)",
    "gain": "gain alone (`--stop gain --plateau-tol 0 --max-cost 0`)",
    "gain-plateau": "gain + plateau fallback, no guard (`--plateau-tol 0.01 --max-cost 0`)",
    "paper-fixed": "paper, fixed (`--stop paper --plateau-tol 0.01 --max-cost 0`)",
    "paper-today": "paper as pwmpr first had it (`--stop paper-unbounded --plateau-tol 0.01 --max-cost 0`)",
}
FAR = 0.02  # two starts "test apart" in the choice table when their test accuracies differ by this much
THREADS = "default-2threads"  # the default's seed-0 runs again with 2 threads: stability, not a variant
RUN_RE = re.compile(r"pwmpr-(?P<rule>.+)-sd(?P<sd>[0-9.]+)-s(?P<seed>\d+)$")
FANIN_SWEEP = "sweep-fanin"  # a pair's sweep made again with --init-scale fan-in (bench/discovery.sh, FANIN_SWEEP=1)


def collect(out: Path) -> tuple[list[dict], dict[str, dict]]:
    """(one score dict per PWMPR run, sweep summary per pair)."""
    from pwmpr import rundir
    from pwmpr.discovery import score

    rows, sweeps = [], {}
    for pair_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        sweep_file = pair_dir / "sweep" / "summary.json"
        if not (pair_dir / "sweep").is_dir():  # not a pair's folder (the data a pair reads, say), or no sweep yet
            if any(RUN_RE.match(run.name) for run in pair_dir.iterdir()):
                print(f"discovery.py: {pair_dir} has runs but no sweep; skipped", file=sys.stderr)
            continue
        if not sweep_file.is_file():
            print(f"discovery.py: {pair_dir} has no finished sweep; skipped", file=sys.stderr)
            continue
        sweep = json.loads(sweep_file.read_text())
        sweeps[pair_dir.name] = sweep
        imp_dir = pair_dir / "imp-s0"
        imp_history = rundir.read_history(imp_dir) if (imp_dir / "summary.json").is_file() else None
        for run in sorted(pair_dir.iterdir()):
            m = RUN_RE.match(run.name)
            if not m or not (run / "summary.json").is_file():
                continue
            summary = json.loads((run / "summary.json").read_text())
            history = rundir.read_history(run)
            rows.append({"pair": pair_dir.name, "rule": m["rule"], "seed_density": float(m["sd"]),
                         "seed": int(m["seed"]), "settings": run_settings(run), "val_acc": summary.get("val_acc"),
                         "final_cost": final_cost(history), "loss_jumps": loss_jumps(history),
                         **score(summary, sweep, imp_history)})
    return rows, sweeps


JUMP_FACTOR, JUMP_MARGIN = 1.5, 0.05  # a rough phase "lost what it learned": its training loss above both


def loss_jumps(history: list[dict]) -> int:
    """Rough phases of a run whose mean training loss (over the phase's epochs, as its history row records it) was
    above JUMP_FACTOR x the phase's before it and JUMP_MARGIN above it: training the grown network lost what the
    one before it had learned."""
    losses = [float(r["train_loss"]) for r in history if r.get("stage") == "phase" and "train_loss" in r]
    return sum(1 for a, b in zip(losses[:-1], losses[1:], strict=True) if b > JUMP_FACTOR * a and b > a + JUMP_MARGIN)


def jumps(rows: list[dict]) -> list[str]:
    """Per variant, the runs in which a rough phase lost what the one before it had learned (``loss_jumps``), and
    per pair those runs' mean test accuracy beside the same pair's other runs of the variant (pairs differ by tens
    of points, so only a pair's own runs are compared)."""
    rules = [r for r in RULE_NAMES if any(x["rule"] == r and "loss_jumps" in x for x in rows)]
    if not rules:
        return []
    lines = ["", f"Rough phases that lost what the phase before them had learned: runs with a phase whose mean "
             f"training loss was above {JUMP_FACTOR:g}x the previous phase's (and {JUMP_MARGIN:g} above it), per "
             "variant, and per pair the runs with one / the pair's runs, with the mean test accuracy of those runs "
             "and of the pair's others:", "", "| variant | runs with a jump | per pair: with / runs (test accuracy "
             "with, without) |", "|---|---|---|"]
    for rule in rules:
        rs = [x for x in rows if x["rule"] == rule and "loss_jumps" in x]
        jumped = [x for x in rs if x["loss_jumps"]]
        parts = []
        for pair in sorted({x["pair"] for x in jumped}):
            mine = [x for x in rs if x["pair"] == pair]
            with_, without = [x for x in mine if x["loss_jumps"]], [x for x in mine if not x["loss_jumps"]]
            parts.append(f"{pair} {len(with_)}/{len(mine)} ({_mean_acc(with_)}, {_mean_acc(without)})")
        lines.append(f"| {rule} | {len(jumped)} of {len(rs)} | {', '.join(parts) or '-'} |")
    return lines


def _mean_acc(rows: list[dict]) -> str:
    return f"{100 * statistics.fmean(x['test_acc'] for x in rows):.2f}%" if rows else "-"


def final_cost(history: list[dict]) -> float | None:
    """The cost (x dense FLOPs) of a run's final training: its final row's cost less the row's before it."""
    if len(history) < 2 or history[-1].get("stage") != "final":
        return None
    return float(history[-1]["cost_flops"]) - float(history[-2]["cost_flops"])


def run_settings(run: Path) -> dict:
    """What a variant's name stands for in one run folder: the settings the benchmark's variants differ in, from
    its config.json (so that two results files are added up or compared only where a name means the same)."""
    cfg = json.loads((run / "config.json").read_text())
    stop, growth = cfg.get("stop", {}), cfg.get("growth", {})
    scale = growth.get("init_scale", "keep")  # recorded where it is not the paper's, so older rows still match
    warmup = cfg.get("train", {}).get("warmup_epochs", 0.0)  # likewise where there is one
    return {"final_init": cfg.get("final_init", "continue"), "growth": growth.get("rule"), "stop": stop.get("rule"),
            "plateau_tol": stop.get("plateau_tol"), "plateau_resolve": stop.get("plateau_resolve", False),
            **({"init_scale": scale} if scale != "keep" else {}), **({"warmup_epochs": warmup} if warmup else {})}


def _meaning(rows: list[dict], rule: str) -> set[str] | None:
    """The settings a variant's runs had, one JSON string each; None when a row does not record them."""
    runs = [x for x in rows if x["rule"] == rule]
    if any("settings" not in x for x in runs):
        return None
    return {json.dumps(x["settings"], sort_keys=True) for x in runs}


def default_rule() -> str:
    """The benchmark's variant that is pwmpr grow's default configuration."""
    from pwmpr.config import RunConfig

    cfg = RunConfig()
    if cfg.growth.rule == "pwmp-explore":
        return "explore"
    if cfg.stop.plateau_resolve:
        return "resolved"
    return "pwmp" if cfg.final_init == "shrink-perturb" else cfg.final_init


def by_seed_density(rows: list[dict]) -> str:
    """The default's hits split by the seed density its runs started from, naming pwmpr grow's default one: a
    sentence for the verdict."""
    from pwmpr.config import GrowthConfig

    default_sd = GrowthConfig().seed_density
    parts = []
    for sd in sorted({x["seed_density"] for x in rows}):
        rs = [x for x in rows if x["seed_density"] == sd]
        hits = sum(1 for x in rs if x["hit"])
        parts.append(f"{hits} of {len(rs)} ({pct(hits / len(rs))}) from {sd:g}"
                     + (" (pwmpr grow's default seed density)" if math.isclose(sd, default_sd) else ""))
    return " By seed density it hits " + ", ".join(parts) + "." if len(parts) > 1 else ""


def unfinished(out: Path) -> list[str]:
    """Run folders of the benchmark that exist but have no summary.json yet."""
    return sorted(f"{p.parent.name}/{p.name}" for p in out.glob("*/*") if p.is_dir()
                  and (RUN_RE.match(p.name) or p.name in ("imp-s0", "sweep", FANIN_SWEEP))
                  and not (p / "summary.json").is_file())


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


def pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% at z = 1.96) of a share of ``hits`` out of ``n`` runs."""
    if n == 0:
        return float("nan"), float("nan")
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


SWEEP_RUN_RE = re.compile(r"d(?P<density>[0-9.e-]+)-s(?P<seed>\d+)$")


def sweep_runs_in_window(out: Path, sweeps: dict[str, dict]) -> list[str]:
    """The accuracy test applied to the sweep's own runs at its knee and 2x its knee: how often one run that
    lands exactly in the window passes it. The test-set noise of a single run bounds what any method can score."""
    lines = ["", "The same accuracy test on the sweep's own single runs at densities from its knee to twice the knee "
             "(one-shot masks that land in the window by construction; the share is what test-set and seed noise "
             "leave to a run that stops in the right place):", "",
             "| pair | densities | runs within 1 point of the sweep's best | share |", "|---|---|---|---|"]
    total = passed = 0
    for pair, sweep in sweeps.items():
        knee, best = sweep["knee"]["density"], sweep["best"]["test_acc"]
        accs, dens = [], set()
        for run in sorted((out / pair / "sweep" / "runs").glob("d*-s*")):
            m = SWEEP_RUN_RE.match(run.name)
            if not m or not (run / "summary.json").is_file():
                continue
            d = float(m["density"])
            if knee - 1e-9 <= d <= 2 * knee + 1e-9:
                accs.append(json.loads((run / "summary.json").read_text())["test_acc"])
                dens.add(d)
        ok = sum(1 for a in accs if a >= best - 0.01 - 1e-12)
        total, passed = total + len(accs), passed + ok
        if accs:
            lines.append(f"| {pair} | {', '.join(f'{d:g}' for d in sorted(dens))} | {ok}/{len(accs)} | "
                         f"{pct(ok / len(accs))} |")
    if total:
        lines.append(f"| all | | {passed}/{total} | **{pct(passed / total)}** |")
    return lines if total else []


def fan_in_sweeps(out: Path, sweeps: dict[str, dict]) -> list[str]:
    """Each pair's sweep made again with every unit's kept weights scaled to its fan-in (``sweep-fanin``) against
    the ground truth's at the same densities: what the scaling does to one-shot masks. It is no ground truth: every
    variant, ``explore-fanin`` too, is scored against the sweep that keeps the initial values."""
    lines = ["", "The same sweeps with each unit's kept weights scaled to its fan-in (`pwmpr sweep --init-scale "
             "fan-in`), against the sweeps above at the same densities (mean test accuracy over seeds; not the "
             "ground truth, which keeps the initial values for every variant):", "",
             "| pair | fan-in higher by a point or more | within a point | fan-in lower by a point or more | "
             "curve with fan-in |", "|---|---|---|---|---|"]
    shown = 0
    for pair, sweep in sweeps.items():
        path = out / pair / FANIN_SWEEP / "summary.json"
        scaled = json.loads(path.read_text()) if path.is_file() else None
        if scaled is None or not scaled.get("complete"):
            continue
        truth = {p["density"]: p["test_acc"] for p in sweep["curve"]}
        points = [(p["density"], p["test_acc"]) for p in scaled["curve"] if p["density"] in truth]
        diffs = {d: acc - truth[d] for d, acc in points}
        side = {d: 0 if x >= 0.01 - 1e-12 else 2 if x <= -0.01 + 1e-12 else 1 for d, x in diffs.items()}
        groups = [[d for d in diffs if side[d] == k] for k in range(3)]  # higher, within, lower
        cells = [", ".join(f"{d:g}" for d in g) or "-" for g in groups]
        curve = ", ".join(f"{d:g}: {100 * acc:.2f}%" for d, acc in points)
        lines.append(f"| {pair} | {' | '.join(cells)} | {curve} |")
        shown += 1
    return lines if shown else []


def render(rows: list[dict], sweeps: dict[str, dict], command: str, elapsed: float | None,
           missing: list[str] = (), out: Path | None = None) -> str:
    """The markdown of bench/results/discovery.md; ``missing`` names runs that have not finished."""
    threads = [x for x in rows if x["rule"] == THREADS]
    rows = [x for x in rows if x["rule"] != THREADS]
    lines = [
        *header(command, f"{elapsed / 60:.0f} min of runs" if elapsed else ""),
        "A run is a **hit** when its final test accuracy is within 1 point of the sweep's best mean test accuracy, "
        "at a discovered density at most 2x the sweep's knee (the smallest density within 1 point of the best), "
        "for a total training cost (FLOPs, x one dense run of the same epochs) of at most 1.5 dense runs and below "
        "IMP's cost to the same density.",
        "",
        "| variant | runs | hits | share of hits | median density / knee | mean gap to sweep best (points) "
        "| mean cost (x dense FLOPs) | stop reasons |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rule in [r for r in RULE_NAMES if any(x["rule"] == r for x in rows)]:
        rs = [x for x in rows if x["rule"] == rule]
        hits = sum(1 for x in rs if x["hit"])
        unknown = sum(1 for x in rs if x["hit"] is None)
        reasons = {}
        for x in rs:
            reasons[x["stop_reason"]] = reasons.get(x["stop_reason"], 0) + 1
        lines.append(
            f"| {RULE_NAMES[rule]} | {len(rs)} | {hits}" + (f" ({unknown} undecided)" if unknown else "")
            + f" | **{pct(hits / len(rs))}** | {statistics.median(x['density_over_knee'] for x in rs):.2f} | "
            f"{100 * statistics.fmean(x['gap_to_best'] for x in rs):+.2f} | "
            f"{statistics.fmean(x['cost_flops'] for x in rs):.2f} | "
            + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) + " |")
    shares = {rule: sum(1 for x in rows if x["rule"] == rule and x["hit"]) / sum(1 for x in rows if x["rule"] == rule)
              for rule in RULE_NAMES if any(x["rule"] == rule for x in rows)}
    top = max(shares.values())
    leaders = [RULE_NAMES[r] for r, v in shares.items() if v == top]
    default = default_rule()
    verdict = (f"Verdict (computed): the highest share of hits, {pct(top)}, is "
               + (f"{leaders[0]}'s." if len(leaders) == 1 else f"shared by {' and '.join(leaders)}."))
    if default in shares:
        n = sum(1 for x in rows if x["rule"] == default)
        lo, hi = wilson(round(shares[default] * n), n)
        verdict += (f" pwmpr's default ({RULE_NAMES[default]}) hits {pct(shares[default])} (95% interval over its "
                    f"{n} runs: {pct(lo)} to {pct(hi)}): the goal of at least 80% "
                    f"is {'met' if shares[default] >= 0.8 else 'not met'}.")
        verdict += by_seed_density([x for x in rows if x["rule"] == default])
    lines += ["", verdict + (" Runs not finished: " + ", ".join(missing) + "." if missing else "")]
    lines += ["", "Per data/model pair and seed density (hits / runs; mean ± std over seeds of the discovered "
              "density and final test accuracy):", "",
              "| pair | sweep knee (best) | seed density | variant | hits | density | test accuracy | mean cost "
              "| why missed |",
              "|---|---|---|---|---|---|---|---|---|"]
    for pair, sweep in sweeps.items():
        for sd in sorted({x["seed_density"] for x in rows if x["pair"] == pair}):
            for rule in RULE_NAMES:
                rs = [x for x in rows if x["pair"] == pair and x["seed_density"] == sd and x["rule"] == rule]
                if not rs:
                    continue
                dens = [x["discovered_density"] for x in rs]
                accs = [100 * x["test_acc"] for x in rs]
                why = []
                for key, text in (("within_acc", "accuracy"), ("within_density", "density"),
                                  ("within_cost", "cost > 1.5"), ("cheaper", "cost > IMP")):
                    n = sum(1 for x in rs if x[key] is False)
                    if n:
                        why.append(f"{text} {n}")
                lines.append(
                    f"| {pair} | {sweep['knee']['density']:g} ({100 * sweep['best']['test_acc']:.2f}% at "
                    f"{sweep['best']['density']:g}) | {sd:g} | {rule} | {sum(1 for x in rs if x['hit'])}/{len(rs)} | "
                    f"{_ms(dens, '.3f')} | {_ms(accs, '.2f')}% | "
                    f"{statistics.fmean(x['cost_flops'] for x in rs):.2f} | {', '.join(why) or '-'} |")
    lines += sweep_runs_in_window(out, sweeps) if out is not None else []
    lines += paired(rows)
    lines += chosen_start(rows)
    lines += jumps(rows)
    lines += stability(rows, threads)
    lines += ["", "Sweeps (one-shot PHEW masks, the same trainer and epochs; mean test accuracy over seeds):", ""]
    for pair, sweep in sweeps.items():
        curve = ", ".join(f"{p['density']:g}: {100 * p['test_acc']:.2f}%" for p in sweep["curve"])
        lines.append(f"- {pair}: {curve}")
    lines += fan_in_sweeps(out, sweeps) if out is not None else []
    return "\n".join(lines) + "\n"


def together(rows: list[dict], others: list[dict], label: str) -> list[str]:
    """Each variant's hits in this report and in ``others`` (another benchmark's rows, named ``label``), and over
    both: the table the default is chosen by (the most hits together), with a computed verdict. A variant is added
    up only where its runs had the same settings in both files (a name can change meaning when a default does)."""
    default = default_rule()
    lines = ["", f"Both benchmarks: each variant's hits here and in {label}, and over both (pwmpr's default is "
             "chosen as the variant with the most hits over both):", "",
             "| variant | hits here | hits there | over both | share |", "|---|---|---|---|---|"]
    shares, differ = {}, []
    for rule in RULE_NAMES:
        here = [x for x in rows if x["rule"] == rule]
        there = [x for x in others if x["rule"] == rule]
        if not here or not there:
            continue
        a, b = _meaning(rows, rule), _meaning(others, rule)
        if a is None or b is None or a != b:
            differ.append(f"`{rule}`")
            continue
        h, t = sum(1 for x in here if x["hit"]), sum(1 for x in there if x["hit"])
        shares[rule] = (h + t) / (len(here) + len(there))
        name = f"`{rule}`" + (" (default)" if rule == default else "")
        lines.append(f"| {name} | {h}/{len(here)} | {t}/{len(there)} | {h + t}/{len(here) + len(there)} | "
                     f"**{pct(shares[rule])}** |")
    one_side = sorted({f"`{x['rule']}`" for x in rows} ^ {f"`{x['rule']}`" for x in others})
    notes = []
    if differ:
        notes.append("Not added up, their settings differ between the two files (or are not recorded there): "
                     + ", ".join(differ) + ".")
    if one_side:
        notes.append("In one file only: " + ", ".join(one_side) + ".")
    if not shares:
        return lines[:2] + ["", "Verdict (computed): no variant ran with the same settings in both."] + notes
    top = max(shares.values())
    leaders = [f"`{r}`" for r, v in shares.items() if v == top]
    if default not in shares:
        tail = "the default did not run with the same settings in both."
    elif shares[default] == top:
        tail = f"the default (`{default}`) is {'one of them' if len(leaders) > 1 else 'that variant'}."
    else:
        tail = f"the default (`{default}`) has {pct(shares[default])}."
    verdict = f"Verdict (computed): the most hits over both, {pct(top)}, are " + " and ".join(leaders) + "'s; " + tail
    return lines + ["", verdict] + ([""] + [" ".join(notes)] if notes else [])


def summary(text: str) -> str:
    """The headline of a report ``render`` wrote: its first line, the hit definition, the table of variants and the
    verdict (what README.md quotes of the held-out benchmark)."""
    blocks = text.split("\n\n")
    keep = [blocks[0]]
    keep += [b for b in blocks if b.startswith(("**Note:**", "A run is a **hit**", "| variant | runs | hits",
                                                "Verdict (computed)", "Both benchmarks:", "| variant | hits here",
                                                "Not added up", "In one file only"))]
    return "\n\n".join(b.rstrip("\n") for b in keep) + "\n"


def start_twin(rows: list[dict], rule: str) -> str | None:
    """For a start of final training (a variant whose runs differ from another's only in ``final_init``), the
    variant with the same growth and stop and the default's start; None for every other variant."""
    mine, base = _meaning(rows, rule), _meaning(rows, default_rule())
    if not mine or not base or len(mine) != 1 or len(base) != 1:
        return None
    own, dflt = json.loads(next(iter(mine))), json.loads(next(iter(base)))
    if own.get("final_init") == dflt.get("final_init"):
        return None
    want = json.dumps({**own, "final_init": dflt.get("final_init")}, sort_keys=True)
    return next((r for r in RULE_NAMES if r != rule and _meaning(rows, r) == {want}), None)


def reference(rows: list[dict], rule: str) -> str:
    """The variant ``rule`` is paired with: a start of final training's twin with the default's start
    (``start_twin``), so that the difference is the start's alone; for every other variant, the default."""
    return start_twin(rows, rule) or default_rule()


def paired(rows: list[dict]) -> list[str]:
    """Every other variant against its reference (``reference``), paired by run (pair, seed density, seed): test
    accuracy and cost."""
    from pwmpr.methods.final_init import FINAL_INITS

    default = default_rule()
    lines = ["", f"Each variant against the default ({default}), paired by run (the same pair, seed density and "
             "seed): test accuracy difference in points, mean ± standard error over runs, the runs the reference "
             "wins, ties or loses, and the mean cost difference. A start of final training (`continue`, `reinit`, "
             "`rewind`) is paired with the variant of the same growth and the default start instead, so its "
             "difference is the start's alone:", "",
             "| variant | paired with | runs | reference minus variant (points) | reference wins / ties / losses | "
             "reference minus variant (cost, x dense) | hits (reference, variant) |",
             "|---|---|---|---|---|---|---|"]
    compared = 0
    order = [r for r in FINAL_INITS.names() if r != default] + [r for r in RULE_NAMES if r not in FINAL_INITS.names()]
    for rule in [r for r in order if r != default]:
        ref = reference(rows, rule)
        base = {(x["pair"], x["seed_density"], x["seed"]): x for x in rows if x["rule"] == ref}
        pairs = [(base[k], x) for x in rows if x["rule"] == rule
                 and (k := (x["pair"], x["seed_density"], x["seed"])) in base]
        if not pairs:
            continue
        compared += 1
        diffs = [100 * (a["test_acc"] - b["test_acc"]) for a, b in pairs]
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
        wins = sum(d > 0 for d in diffs), sum(d == 0 for d in diffs), sum(d < 0 for d in diffs)
        cost = statistics.fmean(a["cost_flops"] - b["cost_flops"] for a, b in pairs)
        lines.append(f"| `{rule}` | `{ref}`{' (default)' if ref == default else ''} | {len(pairs)} | "
                     f"{statistics.fmean(diffs):+.2f} ± {se:.2f} | {' / '.join(map(str, wins))} | {cost:+.2f} | "
                     f"{sum(bool(a['hit']) for a, _ in pairs)}, {sum(bool(b['hit']) for _, b in pairs)} |")
    return lines if compared else []


def chosen_start(rows: list[dict]) -> list[str]:
    """What choosing final training's start per run by validation accuracy would give.

    Each start of final training is paired, run by run, with its twin of the same growth and the default start
    (``start_twin``); a pair counts when both runs ended at the same density after a final training. The choice is
    the start whose final validation accuracy is higher (the twin's on a tie), and its cost is the twin run's plus
    the other start's final training (both are trained). Where that cost passes the cost guard's 1.5 dense runs,
    the guard, counting both final trainings, would have stopped growth sooner: those runs would not have run as
    here and are counted apart, not scored.
    """
    from pwmpr.discovery import cost_verdict

    lines = ["", "Choosing the start of final training per run by validation accuracy: both starts are trained from "
             "the same grown mask and the one with the higher final validation accuracy is kept (the reference's on "
             "a tie), at the cost of both final trainings. Where validation tells the two apart, it picks the start "
             "that tests higher (right) or the other one (wrong); ties are pairs equal on validation or on test. "
             "Hits are counted on the runs whose cost with both final trainings stays within 1.5 dense runs (the "
             "others, under a guard counting both, would have stopped growth sooner):", "",
             "| start | paired with | runs | validation picks right / wrong / ties | right / wrong where the starts "
             "test 2 points apart or more | mean test accuracy: reference, start, chosen | mean cost of the choice "
             "(x dense) | runs within the guard | hits there: reference, start, chosen |",
             "|---|---|---|---|---|---|---|---|---|"]
    tally = []  # (variant, reference, runs, runs within the guard, reference's hits there, the choice's hits there)
    for rule in RULE_NAMES:
        ref = start_twin(rows, rule)
        if ref is None:
            continue
        base = {(x["pair"], x["seed_density"], x["seed"]): x for x in rows if x["rule"] == ref}
        pairs = [(a, b) for b in rows if b["rule"] == rule
                 and (a := base.get((b["pair"], b["seed_density"], b["seed"]))) is not None
                 and abs(a["discovered_density"] - b["discovered_density"]) < 1e-9
                 and all(x.get(k) is not None for x in (a, b) for k in ("val_acc", "final_cost"))]
        if not pairs:
            continue
        right = wrong = ties = far_right = far_wrong = 0
        chosen, kept = [], []
        for a, b in pairs:
            pick = b if b["val_acc"] > a["val_acc"] else a
            far = abs(b["test_acc"] - a["test_acc"]) >= FAR - 1e-12
            if a["test_acc"] == b["test_acc"] or a["val_acc"] == b["val_acc"]:
                ties += 1
            elif (pick is b) == (b["test_acc"] > a["test_acc"]):
                right, far_right = right + 1, far_right + far
            else:
                wrong, far_wrong = wrong + 1, far_wrong + far
            cost = a["cost_flops"] + b["final_cost"]
            within, cheaper = cost_verdict(cost, pick["imp_cost_flops"], pick["imp_cost_exact"])
            chosen.append((pick, cost))
            if within:
                kept.append((a, b, bool(pick["within_acc"] and pick["within_density"] and cheaper)))
        means = [100 * statistics.fmean(x["test_acc"] for x in xs) for xs in
                 ([a for a, _ in pairs], [b for _, b in pairs], [p for p, _ in chosen])]
        hits = [sum(bool(a["hit"]) for a, _, _ in kept), sum(bool(b["hit"]) for _, b, _ in kept),
                sum(h for _, _, h in kept)]
        lines.append(f"| `{rule}` | `{ref}` | {len(pairs)} | {right} / {wrong} / {ties} | {far_right} / {far_wrong} | "
                     f"{means[0]:.2f}%, {means[1]:.2f}%, {means[2]:.2f}% | "
                     f"{statistics.fmean(c for _, c in chosen):.2f} | {len(kept)} of {len(pairs)} | "
                     f"{', '.join(map(str, hits))} |")
        tally.append((rule, ref, len(pairs), len(kept), hits[0], hits[2]))
    if not tally:
        return []
    more = sum(after > before for *_, before, after in tally)
    fewer = sum(after < before for *_, before, after in tally)
    lines += ["", f"Verdict on the choice (computed): both final trainings fit within the guard in "
              f"{sum(t[3] for t in tally)} of {sum(t[2] for t in tally)} paired runs; there the choice hits more "
              f"often than the reference start in {more}, less often in {fewer} and as often in "
              f"{len(tally) - more - fewer} of {len(tally)} {_plural(len(tally), 'comparison')}."]
    return lines


def stability(rows: list[dict], threads: list[dict]) -> list[str]:
    """The discovered density's spread over seeds (default variant) and between 1 and 2 threads (same seed)."""
    default = default_rule()
    lines = ["", "Stability of the discovered density: its spread over the seeds (the default variant) and the "
             "same run (seed 0) with 1 and with 2 threads:", "",
             "| pair | seed density | density over seeds (min / median / max) | 1 thread | 2 threads |",
             "|---|---|---|---|---|"]
    for x in threads:
        same = [r for r in rows if r["rule"] == default and r["pair"] == x["pair"]
                and r["seed_density"] == x["seed_density"]]
        one = next((r for r in same if r["seed"] == x["seed"]), None)
        dens = sorted(r["discovered_density"] for r in same)
        spread = f"{dens[0]:.3f} / {dens[len(dens) // 2]:.3f} / {dens[-1]:.3f}" if dens else "-"
        lines.append(f"| {x['pair']} | {x['seed_density']:g} | {spread} | "
                     f"{one['discovered_density']:.4f} | {x['discovered_density']:.4f} |" if one else
                     f"| {x['pair']} | {x['seed_density']:g} | {spread} | - | {x['discovered_density']:.4f} |")
    return lines if threads else []


def reproduction(rows: list[dict], previous: list[dict], label: str, assume_same: bool = False) -> list[str]:
    """Each run's discovered density against the same run (variant, pair, seed density, seed) in an earlier
    results file, for the variants whose recorded settings are the same in both (``assume_same``: also those the
    earlier file records none for, which ``--previous-rename`` names; growth does not depend on the final
    training's start, so every such variant's run is compared)."""
    same = {x["rule"] for x in rows if _meaning(previous, x["rule"]) in (None, _meaning(rows, x["rule"])) and
            (_meaning(previous, x["rule"]) is not None or assume_same)}
    before = {(x["rule"], x["pair"], x["seed_density"], x["seed"]): x["discovered_density"] for x in previous
              if x["rule"] in same}  # a variant whose settings changed between the files is no reproduction
    keys = [(x["rule"], x["pair"], x["seed_density"], x["seed"]) for x in rows]
    shown = next((r for r in RULE_NAMES if any(k[0] == r and k in before for k in keys)), None)
    if shown is None:
        return []
    lines = ["", f"The same runs in {label}: how many discovered densities agree (to 1e-9), and the densities of "
             f"the `{shown}` runs by seed, here and there:", "",
             "| pair | seed density | runs in both | same density | here | there |", "|---|---|---|---|---|---|"]
    here = dict(zip(keys, (x["discovered_density"] for x in rows), strict=True))
    for pair in sorted({k[1] for k in keys}):
        for sd in sorted({k[2] for k in keys if k[1] == pair}):
            both = sorted(k for k in here if k[1:3] == (pair, sd) and k in before)
            if not both:
                continue
            same = sum(abs(here[k] - before[k]) <= 1e-9 for k in both)
            show = [k for k in both if k[0] == shown]
            now, then = (", ".join(f"{d[k]:.3f}" for k in show) for d in (here, before))
            lines.append(f"| {pair} | {sd:g} | {len(both)} | {same} | {now} | {then} |")
    return lines


def _ms(values: list[float], fmt: str) -> str:
    if len(values) < 2:
        return format(values[0], fmt)
    return f"{format(statistics.fmean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out/discovery")
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results/discovery.md")
    parser.add_argument("--command", default="bash bench/discovery.sh")
    parser.add_argument("--elapsed", type=float, default=None)
    parser.add_argument("--no-quote", action="store_true", help="do not update bench/RESULTS.md and README.md")
    parser.add_argument("--note", default="", help="a provenance note printed under the header")
    parser.add_argument("--previous", type=Path, action="append", default=None,
                        help="an earlier results .json of the same settings: each run's density against it (given "
                             "more than once: their runs together)")
    parser.add_argument("--with", dest="together", type=Path, default=None,
                        help="another benchmark's results .json: each variant's hits there and over both")
    parser.add_argument("--with-label", default="the tuned benchmark (bench/results/discovery.md)",
                        help="how the report names --with")
    parser.add_argument("--previous-rename", default="",
                        help="OLD=NEW,...: the earlier file's variants that are these variants here (a file from "
                             "before runs recorded their settings); only these are compared with it")
    parser.add_argument("--previous-label", default="the previous results file",
                        help="how the report names --previous (where and when it was made)")
    args = parser.parse_args()
    rows, sweeps = collect(args.out)
    if not rows:
        sys.exit(f"discovery.py: no scored PWMPR run under {args.out}")
    text = render(rows, sweeps, args.command, args.elapsed, unfinished(args.out), args.out)
    if args.together is not None:
        text += "\n".join(together(rows, json.loads(args.together.read_text())["rows"], args.with_label)) + "\n"
    if args.previous is not None:
        before = [x for path in args.previous for x in json.loads(path.read_text())["rows"]]
        rename = dict(pair.split("=", 1) for pair in args.previous_rename.split(",") if pair)
        if rename:  # only the named variants: the others may mean something else there
            before = [{**x, "rule": rename[x["rule"]]} for x in before if x["rule"] in rename]
        text += "\n".join(reproduction(rows, before, args.previous_label, assume_same=bool(rename))) + "\n"
    if args.note:
        head, _, rest = text.partition("\n\n")
        text = f"{head}\n\n**Note:** {args.note}\n\n{rest}"
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    (args.results.with_suffix(".json")).write_text(json.dumps({"rows": rows, "sweeps": sweeps}, indent=1) + "\n")
    print(text)
    if not args.no_quote:  # discovery, discovery-heldout: each doc quotes what it has markers for
        name = args.results.stem
        quoted = quote_report(args.results, {name: text, f"{name}-summary": summary(text)})
        if any(q.endswith(f":{name}-summary") for q in quoted):  # a quoted block is always a file of its own
            args.results.with_name(f"{name}-summary.md").write_text(summary(text))


if __name__ == "__main__":
    main()
