"""The training loop: iteration based, SGD with the official recipe, AMP, DDP, resumable."""

from __future__ import annotations

import bisect
import contextlib
import functools
import signal
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from rich.console import Console
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from atssrepro import config as cfg
from atssrepro import distributed
from atssrepro.data.batch import Batch, batch_loader
from atssrepro.data.coco import CocoDetection
from atssrepro.data.sampler import TrainBatchSampler
from atssrepro.engine import checkpoint
from atssrepro.engine.curves import Curves
from atssrepro.engine.progress import progress
from atssrepro.engine.run_dir import RunDir
from atssrepro.errors import UserError
from atssrepro.model.detector import OneStageDetector
from atssrepro.model.losses import combine_losses


class Diverged(Exception):
    """The loss became NaN or infinite; the run stops without evaluating."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped training after a completed iteration, saved in the checkpoint."""

    def __init__(self, iteration: int) -> None:
        super().__init__(f"interrupted after iteration {iteration}; the next start resumes from there")
        self.iteration = iteration


class _StopSignals:
    """While active, Ctrl-C (SIGINT) and SIGTERM only set ``requested``; the loop then finishes
    its iteration, checkpoints it and raises :class:`Interrupted`.

    Repeated signals (a terminal's Ctrl-C reaches torchrun and the harness too, and both pass it
    on) change nothing; SIGKILL still stops at once. The DataLoader workers ignore both signals
    (``data.batch.leave_stopping_to_the_main_process``), so the iteration can finish.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False

    def __enter__(self) -> _StopSignals:
        self._previous = {s: signal.signal(s, self._request) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _request(self, signum: int, frame) -> None:
        self.requested = True


def lr_factor(iteration: int, config: cfg.TrainConfig) -> float:
    """Multiplier on the learning rate at ``iteration`` (0-based): warmup, then step decay."""
    warmup = 1.0
    if iteration < config.warmup_iters:
        if config.warmup_method == "constant":
            warmup = config.warmup_factor
        else:
            alpha = iteration / config.warmup_iters
            warmup = config.warmup_factor * (1 - alpha) + alpha
    return warmup * config.lr_gamma ** bisect.bisect_right(config.lr_steps, iteration)


def build_optimizer(model: nn.Module, config: cfg.TrainConfig) -> torch.optim.SGD:
    """SGD with the maskrcnn-benchmark parameter groups: biases get 2x lr and no weight decay.

    The learning rate scales linearly with the batch: ``base_lr`` is the value at batch 16.
    """
    lr = config.base_lr * config.batch_size / 16
    weights, biases = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (biases if name.endswith("bias") else weights).append(parameter)
    return torch.optim.SGD(
        [
            {"params": weights, "lr": lr, "weight_decay": config.weight_decay},
            {"params": biases, "lr": lr * config.bias_lr_factor, "weight_decay": config.bias_weight_decay},
        ],
        lr=lr,
        momentum=config.momentum,
    )


def training_precision(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """The training step's precision on CUDA (``train.amp``): ``off`` is fp32 with TF32 math off, the
    official code's fp32; ``tf32`` lets convolutions and matmuls use TF32 tensor cores; ``bf16`` and
    ``fp16`` autocast (TF32 allowed in what stays fp32). Full fp32 on the CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = amp != "off"
    if amp in ("off", "tf32"):
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@dataclass
class TrainingState:
    """What :func:`train` builds and a checkpoint restores."""

    model: OneStageDetector
    optimizer: torch.optim.SGD
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    iteration: int  # iterations completed

    def state_dict(self, config: cfg.Config, dataset: CocoDetection) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,
            "rng": checkpoint.rng_state(),
            "config": cfg.to_dict(config),
            "num_classes": dataset.num_classes,
            "category_ids": list(dataset.category_ids),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        checkpoint.set_rng_state(state["rng"])
        self.iteration = state["iteration"]


class GroupedTraining(nn.Module):
    """The training forward of one process's share of a batch: the detector on each padding group,
    then the losses combined over the groups (``model/losses.py::combine_losses``).

    One forward call for all groups, so DDP, which wraps this module, sees one backward per step. The
    iteration (0-based, the one being computed) reaches the assigner, for TAL's warm-up: it comes from
    the training state, which a checkpoint restores, so a resumed run assigns as the straight one.
    """

    def __init__(self, detector: OneStageDetector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, groups: list[Batch], iteration: int | None = None) -> dict[str, torch.Tensor]:
        terms = [
            self.detector.loss_terms(g.images, g.image_sizes, g.boxes, g.labels, g.box_mask, iteration) for g in groups
        ]
        return combine_losses(terms, self.detector.config.loss)


def _groups(loader: Iterable[list[Batch]], device: torch.device) -> Iterator[list[Batch]]:
    for groups in loader:
        yield [group.to(device, non_blocking=True) for group in groups]


def _any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is set on any process (in DDP a collective: every rank calls it)."""
    if not distributed.is_initialized():
        return flag
    return distributed.all_reduce_mean(torch.tensor([float(flag)], device=device)).item() > 0


def train(config: cfg.Config, run: RunDir, device: torch.device, console: Console, curves: Curves) -> OneStageDetector:
    """Train ``config`` in ``run``, resuming from its checkpoint if it has one.

    Writes ``log.jsonl`` and ``curves`` every ``train.log_every`` iterations and ``checkpoint.pt``
    every ``train.checkpoint_every`` iterations and at the end. Returns the trained model (unwrapped).

    Raises:
        Diverged: the loss became NaN or infinite.
        Interrupted: Ctrl-C or SIGTERM; the checkpoint holds the last completed iteration.
    """
    t = config.train
    world = distributed.world_size()
    problem = cfg.batch_split_problem(t, world)
    if problem is not None:
        raise UserError(f"{problem[0]}; {problem[1]}")
    dataset = CocoDetection(
        cfg.data_path(config.data, config.data.train_ann),
        cfg.data_path(config.data, config.data.train_images),
        train=True,
        max_size=config.data.max_size,
    )
    torch.manual_seed(t.seed)
    model = OneStageDetector(config.model, dataset.num_classes).to(device)
    optimizer = build_optimizer(model, t)
    state = TrainingState(
        model=model,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(lr_factor, config=t)),
        scaler=torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and t.amp == "fp16"),
        iteration=0,
    )
    if run.checkpoint_path.exists():
        saved = checkpoint.load(run.checkpoint_path)
        checkpoint.restore(run.checkpoint_path, lambda: state.load_state_dict(saved))
        console.print(f"resuming {run.path} from iteration {state.iteration}")
    if distributed.is_main():
        run.resume_log(state.iteration)  # the windows an earlier start logged after its checkpoint go
    if state.iteration >= t.iterations:
        return model
    curves.start(state.iteration)

    grouped = GroupedTraining(model)
    ddp_model = DistributedDataParallel(grouped) if distributed.is_initialized() else grouped
    sampler = TrainBatchSampler(
        dataset.aspect_groups(),
        t.batch_size,
        config.data.train_short_side,
        config.data.flip_prob,
        seed=t.seed,
        start_iter=state.iteration,
        rank=distributed.rank(),
        world_size=world,
    )
    if distributed.is_main():
        console.print(
            f"training {cfg.config_id(config)}: {len(dataset)} images, {dataset.num_classes} classes, "
            f"batch {t.batch_size} over {world} process(es) in padding groups of {t.pad_group}, "
            f"lr {optimizer.param_groups[0]['lr']:g}, "
            f"{t.iterations} iterations on {device}"
        )

    model.train()
    window_start, window_iters = time.perf_counter(), 0
    loss_sums: dict[str, torch.Tensor] = {}
    # The handlers go in before the loader forks its workers.
    with (
        _StopSignals() as stop,
        batch_loader(
            dataset, sampler, config.data.num_workers, config.data.size_divisible, device, group_size=t.pad_group
        ) as loader,
        progress(console, "train", t.iterations, t.log_every, state.iteration) as report,
    ):
        batches = _groups(loader, device)
        while state.iteration < t.iterations:
            groups = next(batches)
            with training_precision(device, t.amp):
                losses = ddp_model(groups, state.iteration)
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            state.scaler.scale(loss).backward()
            state.scaler.step(optimizer)
            state.scaler.update()
            state.scheduler.step()
            state.iteration += 1
            window_iters += 1
            for name, value in losses.items():
                loss_sums[name] = loss_sums.get(name, 0) + value.detach()

            done = state.iteration == t.iterations
            window_end = state.iteration % t.log_every == 0 or state.iteration % t.checkpoint_every == 0 or done
            # Every DDP rank must stop after the same iteration, or it would wait forever for the
            # others; they agree at window ends, where they sync anyway, so no step pays for it.
            if distributed.is_initialized():
                stopping = window_end and _any_rank(stop.requested, device)
            else:
                stopping = stop.requested
            if window_end:
                # Mean losses of the window, over all ranks: one host sync per window.
                means = distributed.all_reduce_mean(torch.stack(list(loss_sums.values())))
                means = (means / window_iters).tolist()
                elapsed = time.perf_counter() - window_start
                record = {
                    "iter": state.iteration,
                    "loss": sum(means),
                    **dict(zip(loss_sums, means)),
                    "lr": optimizer.param_groups[0]["lr"],
                    "img_per_s": window_iters * t.batch_size / elapsed,
                    "time": time.time(),
                }
                if not all(map(torch.isfinite, torch.tensor(means))):
                    raise Diverged(
                        f"loss is {record['loss']} in iterations {state.iteration - window_iters + 1}"
                        f"..{state.iteration}; lower train.base_lr or use train.amp=fp16/off"
                    )
                if distributed.is_main():
                    run.append_log(record)
                    curves.window(record)
                report(
                    state.iteration,
                    f"loss {record['loss']:.3f} (cls {means[0]:.3f}) lr {record['lr']:.2e} "
                    f"{record['img_per_s']:.1f} img/s",
                )
                window_start, window_iters, loss_sums = time.perf_counter(), 0, {}
            if state.iteration % t.checkpoint_every == 0 or done or stopping:
                if distributed.is_main():
                    checkpoint.save(run.checkpoint_path, state.state_dict(config, dataset))
                distributed.barrier()
            if stopping:
                raise Interrupted(state.iteration)
    return model
