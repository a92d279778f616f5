"""``pwmpr inspect PATH``: per-layer densities and metadata of a run folder, export, .safetensors or .onnx file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pwmpr.cli.errors import boundary

SHOWN_CHARS = 160  # metadata values longer than this are cut in the table view (--json shows them whole)


def inspect(
    path: Annotated[Path, typer.Argument(help="A run folder, an export folder, a .safetensors or an .onnx file.",
                                         show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="Print everything as one JSON object.")] = False,
    trust_code: Annotated[bool, typer.Option("--trust-code", metavar="", help="Allow importing the "
                                             "package.module:function model PATH names (importing runs its "
                                             "code).")] = False,
) -> None:
    """Show the per-layer density table, the overall density and the pwmpr metadata of PATH.

    Files are only parsed (safetensors, protobuf), never executed; a foreign, truncated or inconsistent file
    is an error.
    """
    from pwmpr.models import trusted_code

    with trusted_code(trust_code):
        _inspect(path, as_json)


def _n(count: int | None) -> str:
    return "-" if count is None else f"{count:,}"


@boundary
def _inspect(path: Path, as_json: bool) -> None:
    from pwmpr.export.inspect import inspect_path

    result = inspect_path(path)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    table = Table(title=f"{result.path} · {result.kind}")
    for col in ("layer", "shape", "total", "kept (mask)", "nonzero", "density"):
        table.add_column(col, justify="left" if col in ("layer", "shape") else "right")
    for x in result.layers:
        table.add_row(x.name, "x".join(map(str, x.shape)), _n(x.n_total), _n(x.n_kept), _n(x.n_nonzero),
                      f"{x.density:.4f}")
    table.add_section()
    table.add_row("overall", "", _n(result.total("n_total")), _n(result.total("n_kept")),
                  _n(result.total("n_nonzero")), f"{result.density:.4f}")
    console.print(table)
    for key, value in result.metadata.items():
        text = value if isinstance(value, str) else json.dumps(value)
        if len(text) > SHOWN_CHARS:
            text = text[:SHOWN_CHARS] + " … (--json shows all)"
        console.print(f"{key}: {text}", highlight=False, markup=False, soft_wrap=True)
