"""Export figures: ONNX file size per weight encoding, onnxruntime vs PyTorch eager latency, session start.

Run:  python bench/export.py [--models resnet20 resnet32 mlp] [--densities 0.05 0.1 0.2 0.5] [--seed-method phew]
                             [--run RUN_DIR ...] [--threads 1] [--runs 50] [--provider cpu] [--json-out FILE]

Each (model, density) row exports a model with seed masks (``--seed-method``, PHEW by default) and its
initial weights through the same ``pwmpr.export.pipeline.export_artifact`` as ``pwmpr export``: size and speed
do not depend on trained values, only on the masks, so untrained weights are fine here (the validation inputs
are random too). Each ``--run`` adds a row for the discovered density of a real ``pwmpr grow`` run folder.
ResNets take 3x32x32 inputs, the mlp (LeNet-300-100) 1x28x28. Latency is the median of ``--runs`` calls with
``--threads`` intra-op threads for both onnxruntime and PyTorch. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

import pwmpr
from pwmpr import create_model
from pwmpr.export.pipeline import export_artifact
from pwmpr.export.safetensors_io import Artifact, read_run
from pwmpr.seed import SEEDS

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


def measure(art: Artifact, label: str, args: argparse.Namespace) -> dict:
    """Export ``art`` into a scratch folder and keep the figures of its report."""
    with tempfile.TemporaryDirectory(prefix="pwmpr-bench-") as tmp:
        start = time.perf_counter()
        report = export_artifact(art, Path(tmp) / "out", provider=args.provider, timing_runs=args.runs)
        wall = time.perf_counter() - start
    enc = report["encodings"]
    return {"model": art.model_name, "label": label, "density": report["density"], "export_s": wall,
            "dense_bytes": enc["dense"]["size_bytes"],
            "ratio": {e: enc[e]["ratio_to_dense"] for e in enc},
            "goal": report["density"] + 1 / 32 + 0.02,
            "ort_ms": {e: enc[e]["latency_ms"] for e in enc}, "torch_ms": report["torch"]["latency_ms"],
            "start_s": {e: enc[e]["session_start_s"] for e in enc}, "folded": enc["packed"]["folded"],
            "max_diff": max(enc[e]["max_diff"] for e in enc), "providers": report["providers_used"]}


def table(rows: list[dict]) -> str:
    """The markdown table of ``measure`` rows."""
    head = ("| model | masks | density | dense KiB | sparse/dense | packed/dense | goal ρ+1/32+0.02 | ORT b1 ms "
            "(dense/packed) | eager b1 ms | ORT b64 ms (dense/packed) | eager b64 ms | session start s "
            "(dense/sparse/packed) | folded |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        o, t, s = r["ort_ms"], r["torch_ms"], r["start_s"]
        lines.append(
            f"| {r['model']} | {r['label']} | {r['density']:.4f} | {r['dense_bytes'] / 1024:,.0f} "
            f"| {r['ratio']['sparse']:.3f} | {r['ratio']['packed']:.3f} | {r['goal']:.3f} "
            f"| {o['dense']['1']:.3f} / {o['packed']['1']:.3f} | {t['1']:.3f} "
            f"| {o['dense']['64']:.2f} / {o['packed']['64']:.2f} | {t['64']:.2f} "
            f"| {s['dense']:.3f} / {s['sparse']:.3f} / {s['packed']:.3f} | {'yes' if r['folded'] else 'NO'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet20", "resnet32", "mlp"])
    ap.add_argument("--densities", nargs="+", type=float, default=[0.05, 0.1, 0.2, 0.5])
    ap.add_argument("--seed-method", default="phew", help="how the masks are drawn (pwmpr.seed.SEEDS)")
    ap.add_argument("--run", action="append", default=[], help="a pwmpr grow run folder: adds its discovered density")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads for onnxruntime and PyTorch")
    ap.add_argument("--runs", type=int, default=50, help="timed calls per latency figure (median)")
    ap.add_argument("--provider", default="cpu", help="onnxruntime provider: cpu, cuda or auto")
    ap.add_argument("--json-out", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    print(f"command: python bench/export.py {shlex.join(sys.argv[1:])}")
    print(f"pwmpr {pwmpr.__version__}, torch {torch.__version__}, onnxruntime {ort.__version__}, "
          f"{args.threads} thread(s), {platform.machine()}, {platform.processor() or 'cpu'}")
    rows = []
    for name in args.models:
        for density in args.densities:
            rows.append(measure(seeded(name, density, args.seed_method), args.seed_method, args))
            print(f"  {name} {density}: done", file=sys.stderr, flush=True)
    for run in args.run:
        art = read_run(run)
        rows.append(measure(art, f"discovered ({Path(run).name})", args))
        print(f"  {run}: done", file=sys.stderr, flush=True)
    print(table(rows))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
