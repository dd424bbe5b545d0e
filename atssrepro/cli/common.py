"""What every command shares: the Typer apps, the consoles, the common options and small helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.table import Table
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from atssrepro.errors import UserError
from atssrepro.harness.stats import DEFAULT_SIGMA
from atssrepro.terminal import plain_console

if TYPE_CHECKING:  # imported on use
    from atssrepro.harness.store import Store

# ---- how help reads


class Argument(TyperArgument):
    """An argument shown by its placeholder alone: ``TABLE...`` when required, ``[TABLE...]`` when not."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None  # the placeholder says it: TABLE..., RUN_DIR

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        name = self.metavar or self.name.upper() + ("..." if self.nargs != 1 else "")
        return [name if self.required else f"[{name}]"]


class Option(TyperOption):
    """An option followed by its value's placeholder (``--data DIR``), a flag by nothing."""

    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        return self.metavar or self.name.upper()


def _plain_params(params: list) -> list:
    # Typer builds the parameters; only how help shows them changes (their class, not their state).
    for param in params:
        if type(param) is TyperArgument:
            param.__class__ = Argument
        elif type(param) is TyperOption:
            param.__class__ = Option
    return params


class Command(TyperCommand):
    """Every command: placeholders instead of type names in its help (``--help`` included)."""

    def get_params(self, ctx: Any) -> list:
        return _plain_params(super().get_params(ctx))


class Group(TyperGroup):
    """Every group of commands (``atssrepro``, ``atssrepro data``, ...): as :class:`Command`."""

    def get_params(self, ctx: Any) -> list:
        return _plain_params(super().get_params(ctx))


class _Typer(typer.Typer):
    """A Typer app whose commands are :class:`Command` unless told otherwise."""

    def command(self, *args: Any, cls: type[TyperCommand] = Command, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls, **kwargs)


def _app(help: str) -> typer.Typer:
    # Help text is Markdown: paragraphs flow whatever the docstring's line breaks, `code` shows as code.
    return _Typer(
        cls=Group,
        add_completion=False,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode="markdown",
        help=help,
    )


app = _app("Reproduce the tables of the ATSS paper (CVPR 2020): train, evaluate, report.")
data_app = _app("Make datasets: the embedded synthetic one, or a real COCO subset.")
app.add_typer(data_app, name="data")
analyze_app = _app("Analyses of the assigners: positives per GT by object size, from the annotations or a checkpoint.")
app.add_typer(analyze_app, name="analyze")
import_app = _app("Turn trained models from elsewhere into run folders.")
app.add_typer(import_app, name="import")

# Human-readable progress goes to stderr, so that --json leaves stdout to the JSON alone. Both print
# text as given and never wrap what goes to a file or a pipe (atssrepro/terminal.py).
console = plain_console(stderr=True)
stdout = plain_console()

ConfigOption = typer.Option(
    None,
    "--config",
    "-c",
    metavar="NAME|FILE",
    help="A built-in config (one per official zoo model: atss_r50_fpn_1x, atss_r101_fpn_2x, ...) or a TOML file.",
)
PresetOption = typer.Option(
    "paper",
    "--preset",
    "-p",
    metavar="NAME|FILE",
    help="paper (the official recipe), smoke (a check that everything runs: 20 iterations of a small model on "
    "the CPU, about 30 s on 2 cores, longer on a busy machine), demo (that model trained 300 iterations, "
    "about 2 minutes) or a preset file FILE.toml (README: your own protocol).",
)
SetOption = typer.Option(
    [], "--set", "-s", metavar="KEY=VALUE", help="Override a field: `--set model.assign.topk=7` (repeatable)."
)
DataOption = typer.Option(
    None, "--data", "-d", metavar="DIR", help="Dataset root (annotations/, train2017/, val2017/)."
)


def count_option(default: int | None, *names: str, low: int, high: int, help: str, metavar: str = "N") -> Any:
    """An integer option with its range, shown in its help: a value outside it stops the command as
    it is parsed, before any work, in one line and exit code 2 (``--seeds 0: must be an integer in
    [1, 100]``). Every count option of the commands is one of these."""

    def in_range(param: typer.CallbackParam, value: int | None) -> int | None:
        if value is not None and not low <= value <= high:
            raise UserError(f"{param.opts[0]} {value}: must be an integer in [{low}, {high}]")
        return value

    return typer.Option(default, *names, metavar=metavar, callback=in_range, help=f"{help} ({low} to {high})")


# --preset, --seeds and --data make a row's run id: every command that names runs takes all three.
SeedsOption = count_option(1, "--seeds", low=1, high=100, help="Seeds 0..N-1 per row.")
NoiseOption = typer.Option(
    DEFAULT_SIGMA,
    "--noise",
    metavar="SIGMA",
    help="Run-to-run standard deviation of AP, assumed where a claim's rows have no repeated seeds "
    "(docs/claims.md gives the sources of the default).",
)
JsonOption = typer.Option(
    False, "--json", help='Print the final metrics on stdout as one JSON object, in percent (`"unit": "percent"`).'
)


def metrics_in_percent(metrics: dict) -> dict:
    """The COCO metrics as ``--json`` prints them: in percent, as every report of atssrepro, the unit
    named (``"unit": "percent"``); null where COCOeval has no value (-1: no object of that size).
    metrics.json holds them as pycocotools gives them, fractions."""

    def percent(values: dict[str, float]) -> dict[str, float | None]:
        return {name: round(100 * value, 10) if value >= 0 else None for name, value in values.items()}

    return {
        "unit": "percent",
        **metrics,
        "stats": percent(metrics["stats"]),
        "per_class_ap": percent(metrics.get("per_class_ap", {})),
    }


def print_metrics(metrics: dict, as_json: bool) -> None:
    """The metrics of metrics.json (fractions) as a table in percent, or as JSON (:func:`metrics_in_percent`)."""
    if as_json:
        print(json.dumps(metrics_in_percent(metrics)))
        return
    table = Table(
        title=f"COCO bbox AP/AR % ({metrics['backend']}, {metrics['num_images']} images)", box=box.SIMPLE_HEAD
    )
    for name in metrics["stats"]:
        table.add_column(name, justify="right", no_wrap=True, min_width=len(name))
    table.add_row(*(f"{100 * v:.1f}" if v >= 0 else "-" for v in metrics["stats"].values()))
    stdout.print(table)


TablesArgument = typer.Argument(
    None, metavar="TABLE...", help="Table names (table1..table8, zoo); every paper table (1-8) when none is given."
)
ResultsOption = typer.Option(Path("results"), "--results", metavar="DIR", help="The results store: one folder per run.")


def make_table(*columns: str, title: str | None = None) -> Table:
    """A plain table whose cells wrap instead of being cut, whatever the terminal width."""
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def usable_device(name: str) -> str:
    """``--device NAME`` when this machine has that torch device (``cpu``, ``cuda``, ``cuda:N``);
    otherwise one line saying which devices it has."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name!r}: not a device atssrepro runs on; use cpu, cuda or cuda:N")
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and (device.index or 0) >= count:
        has = (
            f"{count} CUDA device(s), cuda:0 to cuda:{count - 1}; use one of those or cpu"
            if count
            else "no CUDA device; use cpu"
        )
        raise UserError(f"--device {name}: this machine has {has}")
    return name


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


def hint_other_settings(store: Store, run_ids: list[str]) -> None:
    """Say so when the store holds runs, but none of these: made with another --preset or --data."""
    from atssrepro.harness.status import other_settings

    line = other_settings(store, run_ids)
    if line:
        console.print(line)
