"""``pwmpr export RUN_DIR``: safetensors + validated ONNX of a run's final model -> ``pwmpr.export.pipeline``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from pwmpr.cli.errors import boundary

Opt = typer.Option


def export(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder (it holds final.safetensors).",
                                            show_default=False)],
    out: Annotated[Path | None, Opt("--out", "-o", help="Export folder to create; must not exist or be empty "
                                       "(default: RUN_DIR/export).")] = None,
    onnx_weights: Annotated[str, Opt(help="How model.onnx stores the masked weights: dense (zeros stored), sparse "
                                     "(sparse_initializer where smaller) or packed (nonzero values + 1 bit per "
                                     "weight, rebuilt in the graph and folded by onnxruntime at load).")] = "packed",
    provider: Annotated[str, Opt(help="onnxruntime execution provider for validation: auto (CUDA when this "
                                 "onnxruntime has it), cpu, or cuda (an error unless CUDA is really used).")] = "auto",
    opset: Annotated[int, Opt(help="ONNX opset (18 or later).")] = 18,
    timing_runs: Annotated[int, Opt(help="Timed calls per latency figure (the median is reported).")] = 20,
    all_encodings: Annotated[bool, Opt("--all-encodings", metavar="", help="Also keep model.dense.onnx, "
                                       "model.sparse.onnx and model.packed.onnx (all three are always built and "
                                       "validated).")] = False,
    quiet: Annotated[bool, Opt("--quiet", "-q", metavar="", help="Print nothing but errors.")] = False,
    trust_code: Annotated[bool, Opt("--trust-code", metavar="", help="Allow importing the package.module:function "
                                    "model the run folder names (importing runs its code).")] = False,
) -> None:
    """Export a run's final model to model.safetensors, masks.safetensors and model.onnx, validated in onnxruntime.

    All three ONNX weight encodings are built and checked (onnx.checker, onnxruntime vs PyTorch on 64 inputs from
    the run's data set); the files are moved into the export folder only when every check passes, with
    export_report.json (sizes, agreement, latency, session start, providers used).
    """
    from pwmpr.models import trusted_code

    with trusted_code(trust_code):
        _export(run_dir, out, onnx_weights=onnx_weights, provider=provider, opset=opset, timing_runs=timing_runs,
                all_encodings=all_encodings, quiet=quiet)


@boundary
def _export(run_dir: Path, out: Path | None, *, quiet: bool, **options: Any) -> dict:
    from pwmpr.export.pipeline import export_run

    def log(msg: str) -> None:
        print(f"· {msg}", file=sys.stderr, flush=True)

    report = export_run(run_dir, out, log=None if quiet else log, **options)
    if not quiet:
        print_report(report)
    return report


def print_report(report: dict) -> None:
    """The per-encoding table of an export report, then where the files went."""
    from rich.console import Console
    from rich.table import Table

    from pwmpr.progress import terminal_width

    torch_ms = report["torch"]["latency_ms"]
    table = Table(title=f"{report['model']} · density {report['density']:.4f} · {report['inputs']}")
    # PyTorch's latencies are the same for every encoding: they go below the table, which then fits 80 columns.
    for col in ("encoding", "size", "vs dense", "max |diff|", "ORT b1 ms", "ORT b64 ms", "start s", "providers"):
        table.add_column(col, justify="left" if col in ("encoding", "providers") else "right",
                         no_wrap=col == "encoding")
    for enc, row in report["encodings"].items():
        ms = row["latency_ms"]
        mark = " (model.onnx)" if enc == report["onnx_weights"] else ""
        table.add_row(f"{enc}{mark}", f"{row['size_bytes'] / 1024:,.1f} KiB", f"{row['ratio_to_dense']:.3f}",
                      f"{row['max_diff']:.2g}", f"{ms['1']:.3f}", f"{ms['64']:.2f}", f"{row['session_start_s']:.3f}",
                      ",".join(p.replace("ExecutionProvider", "") for p in row["providers"]))
    console = Console(width=terminal_width())  # the terminal's width (COLUMNS, else 80 when piped)
    console.print(table)
    packed = report["encodings"]["packed"]
    console.print(f"PyTorch eager on {report['torch']['device']} ({report['torch']['threads']} threads): "
                  f"{torch_ms['1']:.3f} ms at batch 1, {torch_ms['64']:.2f} ms at batch 64; median of "
                  f"{report['timing']['runs']} runs", highlight=False)
    console.print(f"packed decode folded by onnxruntime at session start: {'yes' if packed['folded'] else 'NO'}",
                  highlight=False)
    if report.get("dynamic_sequence"):
        console.print(f"input: token ids (batch, seq), any seq from 1 to {report['input_shape'][0]}; checked at "
                      f"{report['input_shape'][0]} and {report['encodings']['dense']['short_sequence']['length']}",
                      highlight=False)
    console.print(f"wrote {', '.join(report['files'])} to {report['out']}", highlight=False)
