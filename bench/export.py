"""Export figures: ONNX file size per weight encoding, onnxruntime vs PyTorch eager latency, session start.

Run:  python bench/export.py [--models resnet20 resnet32 mlp] [--densities 0.05 0.1 0.2 0.5] [--seed-method phew]
                             [--run RUN_DIR ...] [--threads 1] [--runs 50] [--repeats 3] [--provider cpu]
                             [--json-out FILE] [--note TEXT] [--dry-run]

Each (model, density) row exports a model with seed masks (``--seed-method``, PHEW by default) and its
initial weights through the same ``pwmpr.export.pipeline.export_artifact`` as ``pwmpr export``: size and speed
do not depend on trained values, only on the masks, so untrained weights are fine here (the validation inputs
are random too). Each ``--run`` adds a row for the discovered density of a real ``pwmpr grow`` run folder.
ResNets take 3x32x32 inputs, the mlp (LeNet-300-100) 1x28x28. Every row is exported ``--repeats`` times (the
repeats are the outer loop, so machine noise spreads over all rows); one latency figure of one repeat is the median
of ``--runs`` calls with ``--threads`` intra-op threads for both onnxruntime and PyTorch, and the table gives min /
median / max of those medians over the repeats, flagging a spread over 20% as noisy. Every derived figure (the
onnxruntime vs eager speed-up range, the packed size ratios, the export of the discovered run) is computed here.

Writes bench/results/export.md (quoted into bench/RESULTS.md between ``<!-- export:begin -->`` and
``<!-- export:end -->``) and its computed headline, bench/results/export-summary.md (quoted into README.md between
``<!-- export-summary:begin -->`` and ``<!-- export-summary:end -->``). ``--dry-run`` prints them, writes nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import NOISE_LIMIT, command, header, mmm, noise_rule, noisy, publish, spread  # noqa: E402

import pwmpr  # noqa: E402
from pwmpr import create_model  # noqa: E402
from pwmpr.export.pipeline import export_artifact  # noqa: E402
from pwmpr.export.safetensors_io import Artifact, read_run_artifact  # noqa: E402
from pwmpr.seed import SEEDS  # noqa: E402

SHAPES = {"mlp": (1, 28, 28)}
CIFAR = (3, 32, 32)


def seeded(name: str, density: float, method: str) -> Artifact:
    """A model at its initial weights with ``method`` seed masks of ``density``."""
    shape = SHAPES.get(name, CIFAR)
    torch.manual_seed(0)
    model = create_model(name, 10, shape)
    masks = SEEDS.get(method)(model, density, shape, seed=0)
    masks.apply(model)
    return Artifact(model.eval(), masks, name, 10, shape, summary={"seed_density": density})


ENCODINGS = ("dense", "sparse", "packed")
BATCHES = ("1", "64")


def measure(art: Artifact, label: str, args: argparse.Namespace) -> dict:
    """Export ``art`` into a scratch folder once and keep the figures of its report."""
    with tempfile.TemporaryDirectory(prefix="pwmpr-bench-") as tmp:
        start = time.perf_counter()
        report = export_artifact(art, Path(tmp) / "out", provider=args.provider, timing_runs=args.runs)
        wall = time.perf_counter() - start
    enc = report["encodings"]
    return {"model": art.model_name, "label": label, "density": report["density"], "export_s": wall,
            "size": {e: enc[e]["size_bytes"] for e in enc}, "files": report["files"],
            "ratio": {e: enc[e]["ratio_to_dense"] for e in enc},
            "goal": report["density"] + 1 / 32 + 0.02,
            "ort_ms": {e: enc[e]["latency_ms"] for e in enc}, "torch_ms": report["torch"]["latency_ms"],
            "start_s": {e: enc[e]["session_start_s"] for e in enc}, "folded": enc["packed"]["folded"],
            "max_diff": max(enc[e]["max_diff"] for e in enc), "providers": report["providers_used"]}


def merge(reps: list[dict]) -> dict:
    """One row from the repeats of one export: sizes (identical in every repeat) and a list per timing."""
    first = reps[0]
    if any(r["size"] != first["size"] or r["files"] != first["files"] for r in reps):
        print(f"note: {first['model']} {first['label']}: file sizes differ between repeats", file=sys.stderr)
    row = {k: first[k] for k in ("model", "label", "density", "size", "files", "ratio", "goal", "providers")}
    row["folded"] = all(r["folded"] for r in reps)
    row["max_diff"] = max(r["max_diff"] for r in reps)
    row["export_s"] = [r["export_s"] for r in reps]
    row["ort_ms"] = {e: {b: [r["ort_ms"][e][b] for r in reps] for b in BATCHES} for e in ENCODINGS}
    row["torch_ms"] = {b: [r["torch_ms"][b] for r in reps] for b in BATCHES}
    row["start_s"] = {e: [r["start_s"][e] for r in reps] for e in ENCODINGS}
    return row


def _timings(row: dict) -> dict[str, list[float]]:
    """Every timing of a row by its short name (latencies, session starts, export wall time)."""
    out = {}
    for b in BATCHES:
        for e in ("dense", "packed"):
            out[f"ORT b{b} {e}"] = row["ort_ms"][e][b]
        out[f"eager b{b}"] = row["torch_ms"][b]
    for e in ENCODINGS:
        out[f"start {e}"] = row["start_s"][e]
    out["export"] = row["export_s"]
    return out


def table(rows: list[dict]) -> str:
    """The markdown table of merged rows."""
    head = ("| model | masks | density | dense KiB | sparse/dense | packed/dense | goal ρ+1/32+0.02 "
            "| ORT b1 ms dense | ORT b1 ms packed | eager b1 ms | ORT b64 ms dense | ORT b64 ms packed | eager b64 ms "
            "| session start s dense / sparse / packed (medians) | export s | folded "
            f"| noisy (spread > {100 * NOISE_LIMIT:.0f}%) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        o, t = r["ort_ms"], r["torch_ms"]
        starts = " / ".join(f"{statistics.median(r['start_s'][e]):.3f}" for e in ENCODINGS)
        flagged = [k for k, v in _timings(r).items() if noisy(v)]
        lines.append(
            f"| {r['model']} | {r['label']} | {r['density']:.4f} | {r['size']['dense'] / 1024:,.0f} "
            f"| {r['ratio']['sparse']:.3f} | {r['ratio']['packed']:.3f} | {r['goal']:.3f} "
            f"| {mmm(o['dense']['1'])} | {mmm(o['packed']['1'])} | {mmm(t['1'])} "
            f"| {mmm(o['dense']['64'], '.2f')} | {mmm(o['packed']['64'], '.2f')} | {mmm(t['64'], '.2f')} "
            f"| {starts} | {mmm(r['export_s'], '.1f')} | {'yes' if r['folded'] else 'NO'} "
            f"| {', '.join(flagged) if flagged else '-'} |")
    return "\n".join(lines)


def _range(values: list[float], fmt: str = ".2f") -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{format(lo, fmt)}-{format(hi, fmt)}"


def computed(rows: list[dict], runs: list[str]) -> list[str]:
    """The derived sentences, each a bullet, computed from the rows."""
    med = statistics.median
    bullets = []
    # Size: packed against its goal, sparse against dense.
    packed = [r["ratio"]["packed"] for r in rows]
    margins = [r["goal"] - r["ratio"]["packed"] for r in rows]
    met = sum(1 for m in margins if m >= 0)
    bullets.append(f"Size: the packed encoding is {_range(packed, '.3f')} of the dense ONNX file over the {len(rows)} "
                   f"rows (density + {_range([r['ratio']['packed'] - r['density'] for r in rows], '.3f')}); it meets "
                   f"its goal (density + 1/32 + 0.02) in {met} of {len(rows)} rows"
                   + (f", by {_range(margins, '.3f')}" if met == len(rows) else "") + ". The sparse_initializer "
                   f"encoding is {_range([r['ratio']['sparse'] for r in rows], '.3f')} of dense, smaller than dense "
                   f"in {sum(1 for r in rows if r['ratio']['sparse'] < 1)} of {len(rows)} rows.")
    # Folding and packed vs dense speed in onnxruntime.
    pd = [med(r["ort_ms"]["packed"][b]) / med(r["ort_ms"]["dense"][b]) for r in rows for b in BATCHES]
    bullets.append(f"onnxruntime folded the packed decode at session start in {sum(r['folded'] for r in rows)} of "
                   f"{len(rows)} rows; packed / dense onnxruntime latency (ratio of medians, batch 1 and 64): "
                   f"{_range(pd)}.")
    # onnxruntime against eager.
    parts = []
    for b in BATCHES:
        for e in ("packed", "dense"):
            sp = [med(r["torch_ms"][b]) / med(r["ort_ms"][e][b]) for r in rows]
            parts.append(f"batch {b}, {e} {_range(sp)}x")
    allsp = [med(r["torch_ms"][b]) / med(r["ort_ms"][e][b]) for r in rows for b in BATCHES for e in ("dense", "packed")]
    bullets.append(f"onnxruntime against PyTorch eager (eager median / onnxruntime median, per row): {_range(allsp)}x "
                   f"over all rows, batches and encodings ({'; '.join(parts)})"
                   + ("" if min(allsp) >= 1 else "; below 1 means eager was faster") + ".")
    # Eager latency of one model should not depend on the masks (dense compute): how much do its rows differ?
    eager = []
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        if len(mine) < 2:
            continue
        for b in BATCHES:
            values = [med(r["torch_ms"][b]) for r in mine]
            eager.append(f"{name} b{b} {100 * spread(values):.0f}%" + (" **(noisy)**" if noisy(values) else ""))
    if eager:
        bullets.append("PyTorch eager computes densely, so its latency should not change between the rows of one "
                       "model; spread (max / min - 1) of its row medians: " + ", ".join(eager) + ".")
    flagged = sum(1 for r in rows for v in _timings(r).values() if noisy(v))
    total = sum(len(_timings(r)) for r in rows)
    bullets.append(f"Noise: {flagged} of {total} timing figures have a max more than {100 * NOISE_LIMIT:.0f}% "
                   "above their min.")
    # The discovered runs: export wall time and file sizes.
    for run in runs:
        r = next(x for x in rows if x.get("run") == run)
        s = r["summary"]
        f = r["files"]
        fit = (f"test accuracy {s['test_acc']:.4f}, {s['stop_reason']} stop after {s['n_phases']} phases"
               if {"test_acc", "stop_reason", "n_phases"} <= set(s) else "")
        bullets.append(f"Discovered run `{run}` (density {r['density']:.4f}" + (f", {fit}" if fit else "")
                       + f"): exporting it (all three encodings built and validated, latency timing included) takes "
                       f"{mmm(r['export_s'], '.1f')} s (min / median / max); `model.onnx` (packed) is "
                       f"{f['model.onnx'] / 1024:,.0f} KiB against {r['size']['dense'] / 1024:,.0f} KiB dense, "
                       f"`model.safetensors` {f['model.safetensors'] / 1024:,.0f} KiB, `masks.safetensors` "
                       f"{f['masks.safetensors'] / 1024:,.0f} KiB.")
    return [f"- {b}" for b in bullets]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet20", "resnet32", "mlp"])
    ap.add_argument("--densities", nargs="+", type=float, default=[0.05, 0.1, 0.2, 0.5])
    ap.add_argument("--seed-method", default="phew", help="how the masks are drawn (pwmpr.seed.SEEDS)")
    ap.add_argument("--run", action="append", default=[], help="a pwmpr grow run folder: adds its discovered density")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads for onnxruntime and PyTorch")
    ap.add_argument("--runs", type=int, default=50, help="timed calls per latency figure (median)")
    ap.add_argument("--repeats", type=int, default=3, help="exports of each row (min / median / max over them)")
    ap.add_argument("--provider", default="cpu", help="onnxruntime provider: cpu, cuda or auto")
    ap.add_argument("--json-out", type=Path, help="also write the rows as JSON here")
    ap.add_argument("--note", default="", help="a provenance note printed under the header (e.g. a shared machine)")
    ap.add_argument("--dry-run", action="store_true", help="print the results, write nothing under bench/")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    jobs = [(name, density) for name in args.models for density in args.densities] + [(run, None) for run in args.run]
    reps: dict[int, list[dict]] = {i: [] for i in range(len(jobs))}
    measure(seeded("mlp", 0.1, args.seed_method), "warm-up", args)  # imports and first compiles: not timed
    start = time.perf_counter()
    for rep in range(args.repeats):
        for i, (name, density) in enumerate(jobs):
            if density is None:
                art, label = read_run_artifact(name), f"discovered ({Path(name).name})"
            else:
                art, label = seeded(name, density, args.seed_method), args.seed_method
            reps[i].append(measure(art, label, args))
            print(f"  repeat {rep + 1}/{args.repeats} {name} {density or ''}: done", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - start
    rows = []
    for i, (name, density) in enumerate(jobs):
        row = merge(reps[i])
        if density is None:
            row["run"] = name
            summary = Path(name) / "summary.json"
            row["summary"] = json.loads(summary.read_text()) if summary.is_file() else {}
        rows.append(row)

    providers = sorted({p for r in rows for p in r["providers"]})
    lines = header(command("bench/export.py"), f"{args.repeats} repeat(s) of each row, {args.runs} calls per latency "
                   f"median, {args.threads} intra-op thread(s); pwmpr {pwmpr.__version__}, onnxruntime "
                   f"{ort.__version__} ({', '.join(providers)}); {elapsed / 60:.0f} min in all", args.note)
    lines += [f"Each {args.seed_method} row exports {args.seed_method.upper()} masks on the untrained initial weights "
              "(sizes and speed depend only on the masks) through the same pipeline as `pwmpr export`; a discovered "
              "row exports the final model of a `pwmpr grow` run folder. Validation inputs are random. Sizes are "
              "ratios to the dense ONNX file. Latency in ms at batch 1 and 64 (onnxruntime with the dense and "
              "packed encodings, and PyTorch eager); session start in seconds; export s is the wall time of the "
              "whole export (three encodings built, validated and timed); one untimed export of the mlp ran first as a "
              "warm-up. " + noise_rule(args.repeats, marked=False) + " The last column names a row's noisy "
              "timings.", "",
              table(rows), "", "Computed from the table:", "", *computed(rows, args.run)]
    text = "\n".join(lines) + "\n"
    summary = "\n".join([*header(command("bench/export.py"), f"{args.repeats} repeat(s) of each row, {args.runs} "
                                 f"calls per latency median", args.note),
                         "Computed by the script (full table: `bench/results/export.md`):", "",
                         *computed(rows, args.run)]) + "\n"
    print(text)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(rows, indent=2) + "\n")
    if not args.dry_run:
        print(f"wrote {publish('export', text, docs=('bench/RESULTS.md',))}")
        print(f"wrote {publish('export-summary', summary, docs=('README.md',))}")


if __name__ == "__main__":
    main()
