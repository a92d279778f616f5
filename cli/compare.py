"""``pwmpr compare RUN_DIR...``: run folders -> ``pwmpr.compare.compare`` -> a printed table, files, claim checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pwmpr.cli.errors import boundary


@boundary
def compare_command(
    runs: Annotated[list[Path], typer.Argument(help="Finished run folders (of pwmpr grow and pwmpr baseline) and "
                                               "sweep folders (pwmpr sweep: the reference for density discovery); "
                                               "seeds of one configuration are grouped.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for compare.md, compare.csv, compare.json and "
                                      "the two plots.")] = Path("compare"),
    plots: Annotated[bool, typer.Option("--plots/--no-plots", metavar="", help="Draw acc_vs_density.png and "
                                        "acc_vs_cost.png.")] = True,
) -> None:
    """Compare runs: one table (test accuracy, density, cost vs dense in both conventions, wall time, tau-core),
    two plots, and the paper's claims checked with the measured values."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from pwmpr.compare import compare, display_row
    from pwmpr.discovery import LOWER_BOUND_NOTE

    result = compare(runs, out, plots=plots)
    console = Console()
    if not console.is_terminal:  # logs and pipes: a wide table rather than one wrapped into 80 columns
        console.width = max(console.width, 160)
    table = Table(title="pwmpr compare (mean ± std over seeds)")
    shown = [display_row(r) for r in result.rows]
    for col in shown[0]:
        table.add_column(col, justify="left" if col == "run" else "right", no_wrap=col == "run")
    for s in shown:
        table.add_row(*(escape(v) for v in s.values()))
    console.print(table)
    for setting, claims in result.claims.items():
        console.print(f"[bold]Claims ({setting})[/bold]")
        for c in claims:
            console.print(f"  [bold]{c.verdict:>13}[/bold]  {escape(c.name)} (paper: {escape(c.paper)}): "
                          f"{escape(c.measured)}", highlight=False)
    if result.discovery:
        console.print("[bold]Density discovery (against the sweep of the same model and data)[/bold]")
        for d in result.discovery:
            console.print(escape(discovery_line(d)), highlight=False)
        if any(d["imp_cost_flops"] is not None and not d["imp_cost_exact"] for d in result.discovery):
            console.print(escape("  " + LOWER_BOUND_NOTE.replace("`", "")), highlight=False)
    for note in result.notes:
        console.print(f"note: {escape(note)}", highlight=False)
    console.print(escape(f"wrote {', '.join(str(f) for f in result.files)}"), highlight=False)


def discovery_line(d: dict) -> str:
    """One run's density-discovery score as the console prints it (IMP's cost written as compare.md writes it)."""
    from pwmpr.discovery import imp_cost_text

    hit = {True: "hit", False: "miss", None: "?"}[d["hit"]]
    imp = "" if d["imp_cost_flops"] is None else f", IMP to that density {imp_cost_text(d)} (x dense FLOPs)"
    return (f"  {hit:>4}  {d['run']}: density {d['discovered_density']:.4f} = {d['density_over_knee']:.2f}x knee, "
            f"test {100 * d['test_acc']:.2f}% ({100 * d['gap_to_best']:+.2f} vs sweep best), cost "
            f"{d['cost_flops']:.2f}x dense FLOPs{imp}")
