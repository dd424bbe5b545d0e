"""DDP on the CPU (gloo): two processes train exactly like one process with the whole batch,
because padding happens per padding group (``train.pad_group``) and the loss normalisers are
averaged over all groups of all ranks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from atssrepro.data.synth import make_synthetic_coco
from atssrepro.engine import checkpoint

from cli import TINY, atssrepro


@pytest.mark.slow
def test_two_ranks_match_one_process(tmp_path):
    # Images of different sizes, and a short side drawn per image: a batch of 4 is two padding
    # groups of 2 with canvases of their own, on one process (two groups) as on two (one each).
    data = tmp_path / "data"
    make_synthetic_coco(data, train_images=6, val_images=3, seed=1, min_side=96, max_side=160)
    args = [*TINY, "--data", str(data), "--set", "train.iterations=4", "--set", "data.num_workers=0"]
    args += ["--set", "train.batch_size=4", "--set", "data.train_short_side=[96, 160]"]
    args += ["--set", "train.lr_steps=[3]"]

    atssrepro("train", *args, "--out", str(tmp_path / "single"))
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "atssrepro", "train", *args, "--out", str(tmp_path / "ddp"), "--json"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    single = checkpoint.load(tmp_path / "single" / "checkpoint.pt")["model"]
    distributed = checkpoint.load(tmp_path / "ddp" / "checkpoint.pt")["model"]
    for name, weight in single.items():
        torch.testing.assert_close(distributed[name], weight, rtol=1e-4, atol=1e-5, msg=name)
    info = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert info["state"] == "done" and info["world_size"] == 2
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["num_images"] == 3 and metrics["world_size"] == 2
    # TensorBoard: one event file, from rank 0 alone.
    assert len(list((tmp_path / "ddp").glob("events.out.tfevents.*"))) == 1
