"""The root Typer app: global options and the command groups (installed as ``pwmpr.cli.app``)."""

from __future__ import annotations

from typing import Annotated

import typer

import pwmpr
from pwmpr.cli import baseline as baseline_cmd
from pwmpr.cli import compare as compare_cmd
from pwmpr.cli import export as export_cmd
from pwmpr.cli import grow as grow_cmd
from pwmpr.cli import inspect as inspect_cmd
from pwmpr.cli import sweep as sweep_cmd

app = typer.Typer(
    name="pwmpr",
    help="Grow sparse networks from a PHEW seed (PWMPR), discover their density, export them.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pwmpr {pwmpr.__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, metavar="",
                           help="Print the version and exit.")
    ] = False,
) -> None:
    """Grow sparse networks from a PHEW seed (PWMPR), discover their density, export them."""


app.command("grow")(grow_cmd.grow)
app.add_typer(baseline_cmd.app, name="baseline")
app.command("sweep")(sweep_cmd.sweep)
app.command("compare")(compare_cmd.compare_command)
app.command("export")(export_cmd.export)
app.command("inspect")(inspect_cmd.inspect)


@app.command("models")
def models_cmd() -> None:
    """List the registered models."""
    for name in pwmpr.list_models():
        typer.echo(name)


def main() -> None:
    """Console-script entry point: a usage error (unknown flag, bad value, missing argument) is one ``error:`` line
    and exit code 2, like every other bad input."""
    import sys

    usage_error = typer.BadParameter.__mro__[1]  # click's UsageError, as the click that typer runs on defines it
    try:
        code = app(standalone_mode=False)
    except usage_error as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "pwmpr"
        message = " ".join(exc.format_message().split())
        print(f"error: {message} (see {command} --help)", file=sys.stderr, flush=True)
        sys.exit(2)
    except typer.Abort:
        print("interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
