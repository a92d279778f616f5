"""Every torchvision classifier seeded, scored, grown and exported on the CPU, and the operations pwmpr refuses.

Run:  python bench/zoo.py [--models NAME ...] [--repeats 3] [--samples 600] [--out bench/out/zoo] [--dry-run]
      (with --models, the models not named keep their rows from the last zoo.json)
      python bench/zoo.py --rerender   # the files again from zoo.json and the export reports, measuring nothing
                                       # (the refusals run again: they take no time to speak of)

Models are ``bench/zoo_models.py``'s ``ZOO``, built as a user would hand them to ``pwmpr grow --model
zoo_models:NAME``. For each one:

* engine timings at 5% density, each timed ``--repeats`` times after one untimed warm-up call (min / median / max):
  the PHEW seed, the PWMP scores of that seed and one pwmp growth step (gamma 0.25);
* ``pwmpr grow`` for 2 phases of 1 epoch and 1 final epoch on ``--samples`` real digits (mnist5k, upsampled to the
  model's input side and replicated to 3 channels, written as an npz file), then ``pwmpr export --all-encodings``:
  the exit status, the stop reason, the size of each ONNX encoding and onnxruntime's agreement with PyTorch.

``REFUSED`` (bench/zoo_models.py) models each use one operation without a rule; their errors are run here and
quoted as they are. Writes bench/results/zoo.md and zoo.json, quotes the table into bench/RESULTS.md (``zoo``) and the
support summary into README.md (``zoo-support``). ``--dry-run`` prints and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import zoo_models  # noqa: E402
from _results import RESULTS, ROOT, command, header, mmm, noise_rule, noisy, publish  # noqa: E402

from pwmpr.errors import PwmprError  # noqa: E402
from pwmpr.growth import grow  # noqa: E402
from pwmpr.masks import prunable  # noqa: E402
from pwmpr.score import pwmp_scores  # noqa: E402
from pwmpr.seed import phew_masks  # noqa: E402

DENSITY, GAMMA = 0.05, 0.25
GROW = ["--max-phases", "2", "--val-fraction", "0.2", "--phase-epochs", "1", "--final-epochs", "1",
        "--reference-epochs", "1", "--batch-size", "64", "--no-tau-core",
        "--final-init", "continue",  # as published, before shrink-perturb became the default
        "--growth", "pwmp",  # as published, before pwmp-explore became the default
        "--no-chance-guard"]  # as published, before the stop sequence held back stops at chance


def _time(fn, repeats: int) -> tuple[list[float], object]:
    out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def _data(side: int, samples: int, out: Path) -> Path:
    """``samples`` training and a quarter as many test digits at ``side`` px, 3 channels, as an npz file."""
    path = out / f"mnist5k-{side}px-{samples}.npz"
    if path.is_file():
        return path
    from pwmpr.data import load_data

    bundle = load_data("mnist5k", val_fraction=0.0)
    n_test = samples // 4
    x = torch.cat([bundle.train.x[:samples], bundle.test.x[:n_test]]).float()
    y = torch.cat([bundle.train.y[:samples], bundle.test.y[:n_test]])
    x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x[:samples].numpy(), y=y[:samples].numpy(), x_test=x[samples:].numpy(),
             y_test=y[samples:].numpy())
    return path


def _run(cmd: list[str], env: dict) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return proc.returncode, (lines[-1] if lines else ""), time.perf_counter() - t0


def engine(name: str, repeats: int) -> dict:
    """Timings of the PHEW seed, its PWMP scores and one growth step on ``name`` at its initial weights."""
    side, factory = zoo_models.ZOO[name]
    shape = (3, side, side)
    torch.manual_seed(0)
    model = factory(10, shape)
    row: dict = {"model": name, "side": side, "n_total": sum(model.get_parameter(n).numel() for n in prunable(model))}
    try:
        row["seed_s"], masks = _time(lambda: phew_masks(model, DENSITY, shape, seed=0), repeats)
        row["score_s"], scores = _time(lambda: pwmp_scores(model, masks, shape), repeats)
        gen = torch.Generator().manual_seed(0)
        row["grow_s"], _ = _time(lambda: grow(masks, scores, GAMMA, generator=gen), repeats)
    except PwmprError as exc:
        row["engine_error"] = str(exc)
    return row


def measure(name: str, repeats: int, samples: int, out: Path) -> dict:
    side = zoo_models.ZOO[name][0]
    row = engine(name, repeats)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH), os.environ.get("PYTHONPATH", "")])}
    run, exported = out / "runs" / name, out / "exports" / name
    data = _data(side, samples, out)
    if not (run / "summary.json").is_file():
        code, last, secs = _run([sys.executable, "-m", "pwmpr", "grow", "--model", f"zoo_models:{name}", "--data",
                                 f"npz:{data}", "--out", str(run), "--force", *GROW], env)
        row.update(grow_exit=code, grow_message=last, grow_wall_s=secs)
    else:
        row.update(grow_exit=0, grow_message="(finished earlier)", grow_wall_s=None)
    if (run / "summary.json").is_file():
        summary = json.loads((run / "summary.json").read_text())
        row.update(stop=summary.get("stop_reason"), density=summary.get("discovered_density"),
                   test_acc=summary.get("test_acc"))
        if not (exported / "export_report.json").is_file():
            code, last, secs = _run([sys.executable, "-m", "pwmpr", "export", str(run), "--out", str(exported),
                                     "--all-encodings", "--trust-code", "--timing-runs", "3"], env)
            row.update(export_exit=code, export_message=last)
        read_export(row, exported)
    return row


def read_export(row: dict, exported: Path) -> None:
    """The export report's figures into ``row`` (nothing when the export did not finish)."""
    if (exported / "export_report.json").is_file():
        report = json.loads((exported / "export_report.json").read_text())
        row["encodings"] = {enc: {"bytes": r["size_bytes"], "ok": r["ok"], "max_diff": r["max_diff"],
                                  "tolerance": r["tolerance"], "not_found": len(r.get("weights_not_found", []))}
                            for enc, r in report["encodings"].items()}
        row["packed_folded"] = report["encodings"]["packed"].get("folded")
        row["providers"] = report["providers_used"]


def refusals() -> list[dict]:
    """The error each REFUSED model gives at the seed (what ``pwmpr grow`` prints after ``error:``)."""
    rows = []
    for name, (what, factory) in zoo_models.REFUSED.items():
        model = factory(10, (3, 8, 8))
        try:
            phew_masks(model, 0.2, (3, 8, 8))
            message = "(no error)"
        except PwmprError as exc:
            message = str(exc)
        rows.append({"model": name, "what": what, "error": message})
    return rows


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f}"


def _t(values) -> str:
    if not values:
        return "-"
    return mmm(values, ".2f") + (" (noisy)" if noisy(values) else "")


def render(rows: list[dict], refused: list[dict], args: argparse.Namespace) -> tuple[str, str]:
    lines = header(command("bench/zoo.py"), f"{args.repeats} repeat(s)")
    lines += [
        f"Every classifier torchvision ships, built as `--model zoo_models:NAME` (bench/zoo_models.py). Engine: PHEW "
        f"seed at {DENSITY:.0%}, PWMP scores of that seed, one pwmp growth step (gamma {GAMMA}), in seconds. Grow: "
        f"`pwmpr grow {' '.join(GROW)}` on {args.samples} mnist5k digits upsampled to the model's side and replicated "
        "to 3 channels (exit status and stop reason). Export: `pwmpr export --all-encodings`, each encoding's size "
        "in MB and whether onnxruntime matches PyTorch on the validation inputs (its largest difference over the "
        "export's tolerance, which scales with the outputs' size and, where larger, with the model's own float32 "
        "spread: `pwmpr export` passes at most 1). This is a reach check: one epoch on "
        f"{args.samples} images says nothing about accuracy, so none is reported (zoo.json keeps each run's figures)."
        + ("" if set(args.models) == set(zoo_models.ZOO) else
           f" Measured last: {', '.join(args.models)}; the other rows are from the run before."),
        "", noise_rule(args.repeats, marked=True), "",
        "| model | px | prunable weights | seed (s) | score (s) | growth step (s) | grow | stop | dense MB | sparse MB "
        "| packed MB | onnxruntime |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        enc = r.get("encodings", {})
        sizes = [_mb(enc[e]["bytes"]) if e in enc else "-" for e in ("dense", "sparse", "packed")]
        check = "-"
        if enc:
            ok = all(v["ok"] for v in enc.values())
            worst = max(v["max_diff"] / v["tolerance"] for v in enc.values())
            check = ("matches" if ok else "DIFFERS") + f" (max diff / tolerance {worst:.2g})"
        elif r.get("export_exit"):
            check = f"export exit {r['export_exit']}: {r.get('export_message', '')}"
        grow_cell = "ok" if r.get("grow_exit") == 0 else f"exit {r.get('grow_exit')}: {r.get('grow_message', '')}"
        lines.append(f"| {r['model']} | {r['side']} | {r['n_total']:,} | {_t(r.get('seed_s'))} | "
                     f"{_t(r.get('score_s'))} | {_t(r.get('grow_s'))} | {grow_cell} | {r.get('stop') or '-'} | "
                     f"{' | '.join(sizes)} | {check} |")
    errors = [r for r in rows if "engine_error" in r]
    for r in errors:
        lines.append(f"\nEngine error on {r['model']}: `{r['engine_error']}`")
    done = [r for r in rows if r.get("grow_exit") == 0 and r.get("encodings")]
    good = [r for r in done if all(v["ok"] for v in r["encodings"].values())]
    lines += ["", f"**{len(good)} of {len(rows)}** models grew and exported with all three encodings matching "
                  "PyTorch in onnxruntime.", ""]
    largest = max(rows, key=lambda r: r["n_total"])
    if largest.get("seed_s"):
        lines.append(f"Largest model: {largest['model']} ({largest['n_total']:,} prunable weights): median seed "
                     f"{sorted(largest['seed_s'])[len(largest['seed_s']) // 2]:.2f} s, score "
                     f"{sorted(largest['score_s'])[len(largest['score_s']) // 2]:.2f} s, growth step "
                     f"{sorted(largest['grow_s'])[len(largest['grow_s']) // 2]:.2f} s.")
        lines.append("")
    table = "\n".join(lines) + "\n"

    support = [
        "<!-- written by a bench script; do not edit by hand -->",
        f"Grown and exported by `python bench/zoo.py` ({len(good)} of {len(rows)} torchvision classifiers; table in "
        "bench/RESULTS.md): " + ", ".join(f"`{r['model']}`" for r in good) + ".",
        "",
        "Refused at the seed, each with one `error:` line (the models are in bench/zoo_models.py):",
        "",
        "| what the model does | error |",
        "|---|---|",
        *(f"| {r['what']} | `{r['error']}` |" for r in refused),
        "",
    ]
    return table, "\n".join(support) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(zoo_models.ZOO))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "zoo")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--rerender", action="store_true",
                        help="rewrite the files from zoo.json and the export reports, measuring nothing")
    args = parser.parse_args()
    rows = []
    if args.rerender:  # the figures measured last time, with the export reports read again
        saved = json.loads((RESULTS / "zoo.json").read_text())
        rows = saved["rows"]
        args.models = saved.get("measured", list(zoo_models.ZOO))
        for row in rows:
            read_export(row, args.out / "exports" / row["model"])
        args.repeats = len(rows[0]["seed_s"])
    elif set(args.models) != set(zoo_models.ZOO) and (RESULTS / "zoo.json").is_file():
        # a subset is measured again: the other models keep the rows measured last time
        rows = [r for r in json.loads((RESULTS / "zoo.json").read_text())["rows"] if r["model"] not in args.models]
    for name in [] if args.rerender else args.models:
        print(f"zoo: {name}", file=sys.stderr, flush=True)
        rows.append(measure(name, args.repeats, args.samples, args.out))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "encodings"}), file=sys.stderr, flush=True)
    order = list(zoo_models.ZOO)
    rows.sort(key=lambda r: order.index(r["model"]) if r["model"] in order else len(order))
    refused = refusals()
    table, support = render(rows, refused, args)
    if args.dry_run:
        print(table)
        print(support)
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "zoo.json").write_text(json.dumps({"rows": rows, "refused": refused, "measured": args.models},
                                                         indent=1))
    publish("zoo", table, docs=("bench/RESULTS.md",))
    publish("zoo-support", support, docs=("README.md",))


if __name__ == "__main__":
    main()
