"""TensorBoard scalars of a run, in its folder: `tensorboard --logdir results/` compares every run.

Each log window of training adds its mean losses, learning rate and speed (``train/<name>``, the
keys of log.jsonl, at the window's last iteration); the evaluation at the end adds the COCO
metrics (``eval/<stat>``, in percent, at the last iteration). Only the main process writes.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from atssrepro import distributed


class Curves:
    """The event files of one run folder: a new file for each start of the run.

    A start opens its file at the iteration it resumes from, with ``purge_step`` one past it, so
    TensorBoard drops the points an earlier start wrote after its last checkpoint: a resumed run
    shows each step once, in order. Every window is flushed at once, so the points up to a
    checkpoint are on disk when it is.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._writer = None

    def __enter__(self) -> Curves:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def start(self, iteration: int) -> None:
        """Open this start's event file; ``iteration``: the iterations already trained."""
        if self._writer is not None or not distributed.is_main():
            return
        # Imported here: only commands that train or evaluate pay for it (tests/test_startup.py).
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(self.log_dir), purge_step=iteration + 1)

    def window(self, record: dict[str, float]) -> None:
        """One log window: ``record`` is the line of log.jsonl (``iter``, ``loss``, each loss, ``lr``, ...)."""
        if self._writer is None:
            return
        for name, value in record.items():
            if name not in ("iter", "time"):
                self._writer.add_scalar(f"train/{name}", value, record["iter"])
        self._writer.flush()

    def metrics(self, metrics: dict, iteration: int) -> None:
        """The evaluation's COCO stats (fractions, -1 for none) as percentages at ``iteration``."""
        self.start(iteration)
        if self._writer is None:
            return
        for name, value in metrics["stats"].items():
            if value >= 0:
                self._writer.add_scalar(f"eval/{name}", 100 * value, iteration)
        self._writer.flush()
