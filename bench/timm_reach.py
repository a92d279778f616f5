"""Reach on timm's classifiers: does `pwmpr grow` then `pwmpr export` run on each, or refuse it in one line?

Run:  pip install timm   # not a pwmpr dependency
      python bench/timm_reach.py [--models NAME ...] [--samples 600] [--out bench/out/timm] [--dry-run]
      python bench/timm_reach.py --rerender   # the report again from timm-reach.json

Each model of bench/timm_models.py (``SPECS``: one small variant per family torchvision does not ship or builds
differently, untrained) is grown with ``pwmpr grow --model timm_models:NAME`` and today's defaults, cut to 2 growth
phases of 1 epoch and 1 final epoch on ``--samples`` mnist5k digits upsampled to the model's side and replicated to
3 channels (bench/zoo.py's data), then exported with ``pwmpr export`` (all three encodings checked in
onnxruntime). Each row is an outcome: the stop reason and density, or the one ``error:`` line a refusal prints, or a
traceback (a bug). One epoch on 600 images says nothing about accuracy, so none is reported. Writes
bench/results/timm-reach.md and timm-reach.json, and quotes the table into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import timm_models  # noqa: E402
from _results import RESULTS, ROOT, command, header, publish  # noqa: E402
from zoo import _data  # noqa: E402

GROW = ["--max-phases", "2", "--val-fraction", "0.2", "--phase-epochs", "1", "--final-epochs", "1",
        "--reference-epochs", "1", "--batch-size", "32", "--no-tau-core", "-q"]
TIMEOUT = 600  # seconds per command


def _run(cmd: list[str], env: dict) -> tuple[int | str, str, bool]:
    """(exit status or "timeout", the last line it printed, whether it printed a traceback)."""
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return "timeout", "", False
    # huggingface_hub's optional-import notes are not pwmpr's output
    lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip() and "hf_api" not in line]
    traceback = "Traceback" in proc.stderr + proc.stdout  # Python's, or rich's boxed "Traceback (most recent..."
    errors = [line for line in lines if line.startswith("error: ")]
    return proc.returncode, (errors[-1] if errors else lines[-1] if lines else ""), traceback


def measure(name: str, samples: int, out: Path) -> dict:
    """One model's row: grow, then export."""
    timm_name, side, _ = timm_models.SPECS[name]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(BENCH), os.environ.get("PYTHONPATH")) if p)}
    run, exported = out / "runs" / name, out / "exports" / name
    data = _data(side, samples, out)
    row: dict = {"model": name, "timm": timm_name, "side": side}
    code, last, traceback = _run([sys.executable, "-m", "pwmpr", "grow", "--model", f"timm_models:{name}",
                                  "--trust-code", "--data", f"npz:{data}", "--out", str(run), "--force", *GROW], env)
    row.update(grow_exit=code, grow_message=last, grow_traceback=traceback)
    if code != 0:
        return row
    summary = json.loads((run / "summary.json").read_text())
    row.update(stop=summary.get("stop_reason"), density=summary.get("discovered_density"))
    shutil.rmtree(exported, ignore_errors=True)  # an export never writes into a folder that holds files
    code, last, traceback = _run([sys.executable, "-m", "pwmpr", "export", str(run), "--out", str(exported),
                                  "--trust-code", "--timing-runs", "2"], env)
    row.update(export_exit=code, export_message=last, export_traceback=traceback)
    report = exported / "export_report.json"
    if code == 0 and report.is_file():
        encodings = json.loads(report.read_text()).get("encodings", {})
        row["ort_ratio"] = max((e["max_diff"] / e["tolerance"] for e in encodings.values() if e.get("tolerance")),
                               default=None)
        row["ort_ok"] = all(e.get("ok") for e in encodings.values())
    return row


def _outcome(code, message: str, traceback: bool) -> str:
    if code == 0:
        return "ok"
    if code == 2 and message.startswith("error: ") and not traceback:
        return f"refused: `{message[len('error: '):].replace('|', '/')}`"
    return f"**bug** (exit {code}{', traceback' if traceback else ''}): `{message.replace('|', '/')[:200]}`"


def render(rows: list[dict], args: argparse.Namespace) -> str:
    """The markdown of bench/results/timm-reach.md."""
    lines = header(command("bench/timm_reach.py"), f"timm {_timm_version()}") + [
        "Each timm classifier of bench/timm_models.py, untrained, grown with `pwmpr grow --model timm_models:NAME "
        f"{' '.join(GROW)}` (today's defaults otherwise) on {args.samples} mnist5k digits upsampled to the model's "
        "side and replicated to 3 channels, then exported with `pwmpr export` (three encodings, each checked in "
        "onnxruntime: the largest difference over the export's tolerance). A refusal is the one `error:` line pwmpr "
        "prints (exit 2); a **bug** is anything else. This is a reach check, not an accuracy one.",
        "",
        "| model (timm name) | px | grow | stop, density | export |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        grow = _outcome(r["grow_exit"], r.get("grow_message", ""), r.get("grow_traceback", False))
        stop = f"{r['stop']}, {r['density']:.4f}" if r.get("stop") and r.get("density") is not None else "-"
        if "export_exit" not in r:
            export = "-"
        elif r["export_exit"] == 0:
            export = (f"ok, onnxruntime matches (max diff / tolerance {r['ort_ratio']:.2g})"
                      if r.get("ort_ok") and r.get("ort_ratio") is not None else "ok")
        else:
            export = _outcome(r["export_exit"], r.get("export_message", ""), r.get("export_traceback", False))
        lines.append(f"| {r['model']} ({r['timm']}) | {r['side']} | {grow} | {stop} | {export} |")
    grown = sum(1 for r in rows if r["grow_exit"] == 0)
    exported = sum(1 for r in rows if r.get("export_exit") == 0)
    def count(step: str, kind: str) -> int:
        return sum(1 for r in rows if f"{step}_exit" in r and _outcome(
            r[f"{step}_exit"], r.get(f"{step}_message", ""), r.get(f"{step}_traceback", False)).startswith(kind))

    measured = getattr(args, "measured", None)
    if measured and set(measured) != {r["model"] for r in rows}:
        lines += ["", f"Measured last, at later code: {', '.join(measured)}; the other rows are from the run before "
                      "(timm-reach.json keeps each row)."]
    lines += ["", f"Computed: of {len(rows)} models, {grown} grow and {exported} of those export with every "
                  f"encoding checked; {count('grow', 'refused')} refused at the start and {count('export', 'refused')} "
                  f"at the export, in one line; {count('grow', '**bug**') + count('export', '**bug**')} step(s) "
                  "failed otherwise (a bug)."]
    return "\n".join(lines) + "\n"


def _timm_version() -> str:
    from pwmpr._tv_compat import import_torchvision

    import_torchvision()
    import timm

    return timm.__version__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(timm_models.SPECS))
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "timm")
    parser.add_argument("--dry-run", action="store_true", help="print the report, write nothing")
    parser.add_argument("--rerender", action="store_true",
                        help="rewrite the report from timm-reach.json, measuring nothing")
    args = parser.parse_args()
    try:
        _timm_version()
    except ImportError:
        sys.exit("bench/timm_reach.py needs timm: pip install timm")
    path = RESULTS / "timm-reach.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    if args.rerender:
        rows, args.samples = saved.get("rows", []), saved.get("samples", args.samples)
        args.measured = saved.get("measured")
    else:  # a subset measured again: the other models keep the rows measured last time
        rows = [r for r in saved.get("rows", []) if r["model"] not in args.models and r["model"] in timm_models.SPECS]
        args.measured = args.models
    for name in [] if args.rerender else args.models:
        print(f"timm_reach: {name}", file=sys.stderr, flush=True)
        rows.append(measure(name, args.samples, args.out))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    order = list(timm_models.SPECS)
    rows.sort(key=lambda r: order.index(r["model"]))
    text = render(rows, args)
    if args.dry_run:
        print(text)
        return
    (RESULTS / "timm-reach.json").write_text(json.dumps({"rows": rows, "samples": args.samples,
                                                        "measured": args.measured}, indent=1))
    publish("timm-reach", text, docs=("bench/RESULTS.md",))


if __name__ == "__main__":
    main()
