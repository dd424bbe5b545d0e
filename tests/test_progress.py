"""Progress where stderr is no terminal (a Slurm job's log, CI): plain lines every N steps."""

from __future__ import annotations

import io
import re
from pathlib import Path

import torch
from rich.console import Console
from test_tta import FixedBoxes, smoke_config, val_split

from atssrepro.engine.evaluate import predict
from atssrepro.engine.progress import progress
from atssrepro.engine.tta import TTAConfig, predict_tta

from cli import TINY, atssrepro

CPU = torch.device("cpu")


def log_console() -> Console:
    return Console(file=io.StringIO(), width=80)


def lines(console: Console) -> list[str]:
    return console.file.getvalue().splitlines()


def test_a_line_every_n_steps_and_at_the_end():
    console = log_console()
    with progress(console, "work", total=10, every=4, completed=1) as report:
        for step in range(2, 11):
            report(step, f"at {step}")
    assert lines(console) == ["work 5/10 at 5", "work 9/10 at 9", "work 10/10 at 10"]


def test_eval_and_tta_print_lines_in_a_log(synth_coco: Path):
    config = smoke_config()  # eval batches of 2 images: 2 batches for the 4 validation images
    dataset = val_split(synth_coco, config)
    model = FixedBoxes([[0, 0, 20, 30]], [1])

    console = log_console()
    predict(model, dataset, config, CPU, console)
    assert lines(console) == ["eval 1/2", "eval 2/2"]

    console = log_console()
    predict_tta(model, dataset, config, TTAConfig(scales=(128,), scale_ranges=((0, 10000),), flip=True), CPU, console)
    # Four passes (normal and 128, each also flipped) per batch of 2 images: a line per batch through all.
    assert lines(console) == ["eval (TTA) 4/8", "eval (TTA) 8/8"]


def test_train_and_eval_commands_print_progress_lines_when_stderr_is_a_file(synth_coco, tmp_path):
    run = tmp_path / "run"
    settings = [
        "--set",
        "train.iterations=4",
        "--set",
        "train.lr_steps=[3]",
        "--set",
        "train.log_every=2",
        "--set",
        "data.num_workers=0",
    ]
    result = atssrepro("train", *TINY, *settings, "--data", str(synth_coco), "--out", str(run))
    assert re.findall(r"^train (\d+)/4 loss [\d.]+", result.stderr, re.MULTILINE) == ["2", "4"]
    assert re.findall(r"^eval (\d+)/\d+$", result.stderr, re.MULTILINE)
