"""What every command shares: the Typer apps, the consoles, the common options and small helpers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from atssrepro.errors import UserError
from atssrepro.harness.stats import DEFAULT_SIGMA

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Reproduce the tables of the ATSS paper (CVPR 2020): train, evaluate, report.",
)
data_app = typer.Typer(no_args_is_help=True, help="Make datasets: the embedded synthetic one, or a real COCO subset.")
app.add_typer(data_app, name="data")
analyze_app = typer.Typer(no_args_is_help=True, help="Analyses that need no GPU and no images.")
app.add_typer(analyze_app, name="analyze")
import_app = typer.Typer(no_args_is_help=True, help="Turn trained models from elsewhere into run folders.")
app.add_typer(import_app, name="import")

# Human-readable progress goes to stderr, so that --json leaves stdout to the JSON alone.
console = Console(stderr=True)
# Piped or redirected output is not bound to a terminal's width: keep table lines whole.
stdout = Console(width=None if sys.stdout.isatty() else 160)

ConfigOption = typer.Option(None, "--config", "-c", help="A built-in config name or a TOML file.")
PresetOption = typer.Option(
    "paper",
    "--preset",
    "-p",
    help="paper (the official recipe), smoke (CPU, ~1 min), demo (CPU, ~2 min) or a preset file FILE.toml (README).",
)
SetOption = typer.Option([], "--set", "-s", help="Override a field: --set model.assign.topk=7 (repeatable).")
DataOption = typer.Option(None, "--data", "-d", help="Dataset root (annotations/, train2017/, val2017/).")
# --preset, --seeds and --data make a row's run id: every command that names runs takes all three.
SeedsOption = typer.Option(1, help="Seeds 0..N-1 per row.")
NoiseOption = typer.Option(
    DEFAULT_SIGMA,
    "--noise",
    metavar="SIGMA",
    help="Run-to-run standard deviation of AP, assumed where a claim's rows have no repeated seeds "
    "(docs/claims.md gives the sources of the default).",
)
JsonOption = typer.Option(False, "--json", help="Print the final metrics as one JSON object on stdout.")


def print_metrics(metrics: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(metrics))
        return
    table = Table(
        title=f"COCO bbox AP/AR % ({metrics['backend']}, {metrics['num_images']} images)", box=box.SIMPLE_HEAD
    )
    for name in metrics["stats"]:
        table.add_column(name, justify="right", no_wrap=True, min_width=len(name))
    table.add_row(*(f"{100 * v:.1f}" if v >= 0 else "-" for v in metrics["stats"].values()))
    stdout.print(table)


TablesArgument = typer.Argument(None, help="Table names (table1..table8); all tables when none are given.")
ResultsOption = typer.Option(Path("results"), "--results", help="The results store: one folder per run.")


def make_table(*columns: str, title: str | None = None) -> Table:
    """A plain table whose cells wrap instead of being cut, whatever the terminal width."""
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def load_specs(tables: list[str] | None) -> list:
    from atssrepro.harness.specs import available_tables, load_table

    return [load_table(name) for name in (tables or available_tables())]


def check_torch_pair() -> None:
    """Fail in one line when torchvision was built for another torch than the installed one.

    Called by the commands that need torch only: the others (--help, list, show, status, report,
    run --dry-run) never import it, so that they start in a fraction of a second."""
    try:
        import torchvision  # noqa: F401
    except (RuntimeError, ImportError, OSError) as e:
        import torch

        raise UserError(
            f"torchvision does not work with the installed torch {torch.__version__} "
            f"({str(e).splitlines()[0]}); install a matching pair: pip install -c constraints.txt torch torchvision"
        ) from None
