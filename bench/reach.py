"""Reach on another model zoo: does `pwmpr grow` then `pwmpr export` run on each of its models, or refuse it in one
line?

Run:  pip install timm            # or transformers, or pytorchcv: none is a pwmpr dependency
      python bench/reach.py --zoo timm [--models NAME ...] [--samples 600] [--out bench/out/reach] [--dry-run]
      python bench/reach.py --zoo transformers
      python bench/reach.py --zoo pytorchcv --samples 200
      python bench/reach.py --zoo timm --rerender   # the report again from its json file, measuring nothing

Each model of the zoo's module (``ZOOS``: bench/timm_models.py, one small variant per timm family torchvision does not
ship or builds differently; bench/hf_models.py, one small configuration per transformers model type with an image or a
sequence classifier; bench/cv_models.py, one small member of each pytorchcv family), untrained, is grown with ``pwmpr
grow --model MODULE:NAME`` and today's defaults, cut to 2 growth phases of 1 epoch and 1 final epoch, then exported
with ``pwmpr export`` (all three encodings checked in onnxruntime). Image models read ``--samples`` mnist5k digits
upsampled to the model's side and replicated to 3 channels (bench/zoo.py's data); text models read token ids
(``token_data``). Each row is an outcome: the stop reason and density, or the one ``error:`` line a refusal prints, or
a traceback (a bug). One epoch says nothing about accuracy, so none is reported. Writes bench/results/<zoo>-reach.md
and .json, and quotes the table into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from _results import RESULTS, ROOT, command, header, publish  # noqa: E402
from zoo import _data  # noqa: E402

GROW = ["--max-phases", "2", "--val-fraction", "0.2", "--phase-epochs", "1", "--final-epochs", "1",
        "--reference-epochs", "1", "--batch-size", "32", "--no-tau-core", "-q"]
TIMEOUT = 600  # seconds per command


@dataclass(frozen=True)
class Zoo:
    """A model zoo: the bench module of its factories, the library it needs, how a model's row names it, and how to
    read a spec of the module's ``SPECS``: the zoo's own name of the model, and its input (``image`` or ``text``,
    the side in pixels or the sequence length)."""

    module: str  # bench/<module>.py: SPECS and one factory per name
    library: str  # the package to import (its version goes into the report)
    column: str  # what the table's first column shows in brackets
    source_of: Callable[[tuple], str]
    input_of: Callable[[tuple], tuple[str, int]]

    def specs(self) -> dict:
        return importlib.import_module(self.module).SPECS

    def source(self, name: str) -> str:
        """The zoo's own name of model ``name`` (timm's or pytorchcv's name, transformers' model type)."""
        return self.source_of(self.specs()[name])

    def input(self, name: str) -> tuple[str, int]:
        """(``image`` or ``text``, the side in pixels or the sequence length)."""
        return self.input_of(self.specs()[name])


ZOOS = {
    # timm_models: (timm name, side, create_model arguments)
    "timm": Zoo("timm_models", "timm", "timm name", lambda s: s[0], lambda s: ("image", s[1])),
    # hf_models: (task, model type, size, config arguments)
    "transformers": Zoo("hf_models", "transformers", "model type", lambda s: s[1], lambda s: (s[0], s[2])),
    # cv_models: (pytorchcv name, side)
    "pytorchcv": Zoo("cv_models", "pytorchcv", "pytorchcv name", lambda s: s[0], lambda s: ("image", s[1])),
}


def token_data(length: int, samples: int, out: Path, vocab: int = 64) -> Path:
    """``samples`` training and a quarter as many test sequences of ``length`` token ids (2 .. vocab-1) as an npz
    file (``tokens``): label 1 when ids below 20 outnumber ids of 46 and above (a bag-of-words task a classifier can
    learn), else 0."""
    path = out / f"tokens-{length}-{samples}.npz"
    if path.is_file():
        return path
    rng = np.random.default_rng(0)
    n_test = samples // 4
    x = rng.integers(2, vocab, size=(samples + n_test, length))
    y = ((x < 20).sum(1) > (x >= 46).sum(1)).astype(np.int64)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(path, tokens=x[:samples], y=y[:samples], tokens_test=x[samples:], y_test=y[samples:])
    return path


def measure(zoo: Zoo, name: str, samples: int, out: Path) -> dict:
    """One model's row: grow, then export."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(BENCH), os.environ.get("PYTHONPATH")) if p)}
    run, exported = out / "runs" / name, out / "exports" / name
    task, size = zoo.input(name)
    data = _data(size, samples, out) if task == "image" else token_data(size, samples, out)
    row: dict = {"model": name, "source": zoo.source(name), "task": task, "side": size}
    code, last, traceback = _run([sys.executable, "-m", "pwmpr", "grow", "--model", f"{zoo.module}:{name}",
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


def _outcome(code, message: str, traceback: bool) -> str:
    if code == 0:
        return "ok"
    if code == 2 and message.startswith("error: ") and not traceback:
        return f"refused: `{message[len('error: '):].replace('|', '/')}`"
    return f"**bug** (exit {code}{', traceback' if traceback else ''}): `{message.replace('|', '/')[:200]}`"


def render(zoo_name: str, rows: list[dict], args: argparse.Namespace) -> str:
    """The markdown of bench/results/<zoo>-reach.md."""
    zoo = ZOOS[zoo_name]
    lines = header(command("bench/reach.py"), f"{zoo.library} {_version(zoo.library)}") + [
        f"Each {zoo_name} classifier of bench/{zoo.module}.py, untrained, grown with `pwmpr grow --model "
        f"{zoo.module}:NAME {' '.join(GROW)}` (today's defaults otherwise), then exported with `pwmpr export` "
        "(three encodings, each checked in onnxruntime: the largest difference over the export's tolerance). "
        f"Image models read {args.samples} mnist5k digits upsampled to the model's side and replicated to 3 "
        f"channels; text models read {args.samples} sequences of token ids labelled by which of two id ranges is "
        "more frequent (bench/reach.py, token_data). A refusal is the one `error:` line pwmpr prints (exit 2); a "
        "**bug** is anything else. This is a reach check, not an accuracy one.",
        "",
        f"| model ({zoo.column}) | input | grow | stop, density | export |",
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
        size = f"{r['side']} tokens" if r.get("task") == "text" else f"{r['side']} px"
        lines.append(f"| {r['model']} ({r.get('source', r.get('timm'))}) | {size} | {grow} | {stop} | {export} |")
    grown = sum(1 for r in rows if r["grow_exit"] == 0)
    exported = sum(1 for r in rows if r.get("export_exit") == 0)

    def count(step: str, kind: str) -> int:
        return sum(1 for r in rows if f"{step}_exit" in r and _outcome(
            r[f"{step}_exit"], r.get(f"{step}_message", ""), r.get(f"{step}_traceback", False)).startswith(kind))

    measured = getattr(args, "measured", None)
    if measured and set(measured) != {r["model"] for r in rows}:
        lines += ["", f"Measured last, at later code: {', '.join(measured)}; the other rows are from the run before "
                      f"({zoo_name}-reach.json keeps each row)."]
    lines += ["", f"Computed: of {len(rows)} models, {grown} grow and {exported} of those export with every "
                  f"encoding checked; {count('grow', 'refused')} refused at the start and {count('export', 'refused')} "
                  f"at the export, in one line; {count('grow', '**bug**') + count('export', '**bug**')} step(s) "
                  "failed otherwise (a bug)."]
    return "\n".join(lines) + "\n"


def _version(library: str) -> str:
    from pwmpr._tv_compat import import_torchvision

    import_torchvision()  # first: the CPU-torch shim every zoo's torchvision import needs
    return importlib.import_module(library).__version__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", choices=list(ZOOS), required=True)
    parser.add_argument("--models", nargs="*", help="a subset (default: every model of the zoo)")
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--out", type=Path, help="run and export folders (default: bench/out/<zoo>)")
    parser.add_argument("--dry-run", action="store_true", help="print the report, write nothing")
    parser.add_argument("--rerender", action="store_true",
                        help="rewrite the report from <zoo>-reach.json, measuring nothing")
    args = parser.parse_args()
    zoo = ZOOS[args.zoo]
    try:
        _version(zoo.library)
    except ImportError:
        sys.exit(f"bench/reach.py --zoo {args.zoo} needs {zoo.library}: pip install {zoo.library}")
    specs = zoo.specs()
    args.models = args.models or list(specs)
    unknown = [m for m in args.models if m not in specs]
    if unknown:
        sys.exit(f"bench/reach.py: no {args.zoo} model {', '.join(unknown)} in bench/{zoo.module}.py")
    out = args.out or ROOT / "bench" / "out" / args.zoo
    path = RESULTS / f"{args.zoo}-reach.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    if args.rerender:
        rows, args.samples = saved.get("rows", []), saved.get("samples", args.samples)
        args.measured = saved.get("measured")
    else:  # a subset measured again: the other models keep the rows measured last time
        rows = [r for r in saved.get("rows", []) if r["model"] not in args.models and r["model"] in specs]
        args.measured = args.models
    for name in [] if args.rerender else args.models:
        print(f"reach: {args.zoo} {name}", file=sys.stderr, flush=True)
        rows.append(measure(zoo, name, args.samples, out))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    order = list(specs)
    rows.sort(key=lambda r: order.index(r["model"]))
    text = render(args.zoo, rows, args)
    if args.dry_run:
        print(text)
        return
    path.write_text(json.dumps({"rows": rows, "samples": args.samples, "measured": args.measured}, indent=1))
    publish(f"{args.zoo}-reach", text, docs=("bench/RESULTS.md",))


if __name__ == "__main__":
    main()
