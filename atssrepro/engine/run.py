"""One run from start to finish: train (or resume), evaluate, record state and metrics."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
import time
import traceback
from pathlib import Path

import torch
from rich.console import Console

from atssrepro import config as cfg
from atssrepro import distributed
from atssrepro.data.coco import CocoDetection
from atssrepro.engine import checkpoint
from atssrepro.engine.coco_eval import CocoMetrics
from atssrepro.engine.curves import Curves
from atssrepro.engine.evaluate import evaluate, predict, val_dataset
from atssrepro.engine.preflight import check_data, folder_problem
from atssrepro.engine.run_dir import RunDir
from atssrepro.engine.run_state import RunState
from atssrepro.engine.train import Diverged, train
from atssrepro.engine.tta import TTAConfig, predict_tta
from atssrepro.errors import UserError, one_line
from atssrepro.fileio import write_json
from atssrepro.model import pretrained
from atssrepro.model.anchors import anchors_per_location
from atssrepro.model.detector import OneStageDetector


def execute(config: cfg.Config, run: RunDir, preset: str, console: Console) -> dict:
    """Train and evaluate ``config`` in ``run``; returns the metrics written to metrics.json.

    A finished run (metrics.json present) is not trained again. A run with a checkpoint resumes.
    Before the run folder is written, what the run needs is checked (``engine/preflight.py``): a
    folder it can write, both annotation files and image folders, and its pretrained weights, found
    (or downloaded) first and recorded in run.json (``pretrained``: the weights, the file's path
    and its sha256); a missing one is one line and leaves no folder behind. Both annotation files
    are read before the first iteration (the validation split too, not only after training). The
    run's state in run.json goes pending -> running -> done, or to diverged / failed / interrupted
    with the reason; a diverged run is not evaluated.
    """
    device = distributed.init_from_env()
    if run.metrics_path.exists():
        if distributed.is_main():
            run.init(config, preset)  # refuses a folder that holds another run
        return read_metrics(run)
    problem = folder_problem(run.path, writable=True)
    if problem:
        raise UserError(f"--out {run.path}: {problem}; pick another --out")
    check_data(config.data)
    weights: dict = {}
    if distributed.is_main():
        if not run.checkpoint_path.exists():
            b = config.model.backbone
            # Before the other processes build the model: they find the file downloaded.
            weights = {"pretrained": pretrained.provenance(b.weights, b.name, b.style)}
        run.init(config, preset)
    distributed.barrier()
    with run.lock() if distributed.is_main() else contextlib.nullcontext():
        # A resumed run drops the reason its previous start stopped for.
        _record(
            run, RunState.RUNNING, started=time.time(), world_size=distributed.world_size(), device=str(device),
            threads=torch.get_num_threads(), message=None, traceback=None, checkpoint_iteration=None, **weights,
        )  # fmt: skip
        try:
            validation = val_dataset(config)  # read now: a broken validation split stops the run before it trains
            with Curves(run.path) as curves:
                model = train(config, run, device, console, curves)
                metrics = evaluate_model(model, config, device, console, EvaluationFiles.of(run), validation)
                if metrics:
                    curves.metrics(metrics, config.train.iterations)
        except Diverged as e:
            _record(run, RunState.DIVERGED, message=str(e))
            raise UserError(f"run {run.path} diverged: {e}") from None
        except UserError as e:
            _record(run, RunState.FAILED, message=one_line(e))
            raise
        except KeyboardInterrupt as e:
            # Ctrl-C, or SIGTERM in training (which then checkpointed its last iteration): resumable.
            stopped_at = getattr(e, "iteration", None)  # what status shows (the log may be ahead of it)
            _record(run, RunState.INTERRUPTED, message=str(e) or "interrupted", checkpoint_iteration=stopped_at)
            raise
        except BaseException as e:
            # Crashes leave the folder resumable too; record why it stopped.
            _record(run, RunState.FAILED, message=one_line(e), traceback=traceback.format_exc(limit=5))
            raise
        _record(run, RunState.DONE, finished=time.time())
    return metrics


def _record(run: RunDir, state: RunState, **fields) -> None:
    """Only the main process writes the run's state."""
    if distributed.is_main():
        run.set_state(state, **fields)


def evaluate_model(
    model: OneStageDetector,
    config: cfg.Config,
    device: torch.device,
    console: Console,
    files: EvaluationFiles | None = None,
    dataset: CocoDetection | None = None,
) -> dict:
    """Detect on the validation split (``dataset``, read from ``config`` when None) and score it;
    write the detections and metrics to ``files``.

    Returns the metrics on the main process and ``{}`` on the others.
    """
    dataset = val_dataset(config) if dataset is None else dataset
    detections = detect(model, dataset, config, device, console)
    if not distributed.is_main():
        return {}
    result: CocoMetrics = evaluate(detections, dataset, config)
    metrics = {**result.to_json(), "eval_batch_size": config.eval.batch_size, "world_size": distributed.world_size()}
    if files is not None:
        write_json(files.detections, detections, indent=None)
        write_json(files.metrics, metrics)
    return metrics


def read_metrics(run: RunDir) -> dict:
    """The run's metrics.json, checked (a corrupt record of the run is one line naming it)."""
    problem = run.corruption()
    if problem:
        raise UserError(problem)
    return run.metrics() or {}


def detect(
    model: OneStageDetector, dataset: CocoDetection, config: cfg.Config, device: torch.device, console: Console
) -> list[dict]:
    """COCO results for every image of ``dataset``: single scale, or multi-scale when ``eval.tta``.

    The model's classes are the dataset's categories in id order: a dataset with another number of
    them is refused (its ids could not name the model's classes)."""
    if dataset.num_classes != model.num_classes:
        raise UserError(
            f"{dataset.ann_file} has {dataset.num_classes} categories, the model was trained on "
            f"{model.num_classes}; use data with the categories the model was trained on"
        )
    if config.eval.tta:
        return predict_tta(model, dataset, config, TTAConfig(), device, console)
    return predict(model, dataset, config, device, console)


@dataclasses.dataclass(frozen=True)
class EvaluationFiles:
    """Where an evaluation writes its COCO results and its metrics."""

    detections: Path
    metrics: Path

    @staticmethod
    def of(run: RunDir, tag: str = "") -> EvaluationFiles:
        """The run's own files (``detections[_tta].json``, ``metrics[_tta].json``), or with ``tag``
        the files beside them that say what else was evaluated (``metrics.<tag>.json``)."""
        name = (lambda path: path.with_name(f"{path.stem}.{tag}.json")) if tag else (lambda path: path)
        return EvaluationFiles(name(run.detections_path), name(run.metrics_path))


def data_tag(root: str) -> str:
    """A name for the dataset at ``root`` in file names: its folder's name and a short hash of its
    absolute path (``tiny_coco-1f2e3d4c``), the same however the path is spelled."""
    path = Path(root).resolve()
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", path.name).strip("._") or "data"
    return f"{name}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def evaluate_run(
    target: Path,
    console: Console,
    data: str | None = None,
    backend: str | None = None,
    tta: bool = False,
) -> dict:
    """Evaluate a run folder or a checkpoint file (``atssrepro eval``); says in one line where the
    detections and metrics went.

    A finished run folder evaluated on its own data (``data`` None or the same folder, however
    spelled) keeps them as its own ``detections.json`` and ``metrics.json`` (``*_tta.json`` with
    ``tta``). On other data they go beside those, named after the data (:func:`data_tag`); the
    checkpoint of an unfinished run also names its iteration (``metrics.iter200.json``), so that
    the run still trains to its end. For a lone checkpoint they are only returned. Returns ``{}``
    on the non-main processes of a DDP evaluation.
    """
    run = RunDir(target, tta=tta) if target.is_dir() else None
    device = distributed.init_from_env()
    path = run.checkpoint_path if run else target
    state = checkpoint.load(path)
    model, config = trained_model(state, path, device)
    tags = []
    if data is not None and Path(data).resolve() != Path(config.data.root).resolve():
        tags.append(data_tag(data))
        config = cfg.with_data_root(config, data)
    if state["iteration"] < config.train.iterations:
        tags.append(f"iter{state['iteration']}")
    evaluation = dataclasses.replace(config.eval, backend=backend or config.eval.backend, tta=tta)
    config = dataclasses.replace(config, eval=evaluation)
    files = EvaluationFiles.of(run, ".".join(tags)) if run else None
    metrics = evaluate_model(model, config, device, console, files)
    if metrics:
        where = (
            f"wrote {files.metrics} and {files.detections}"
            if files
            else f"{target} is a checkpoint file, not a run folder: nothing written"
        )
        console.print(where, highlight=False, markup=False, soft_wrap=True)
    return metrics


def model_from_checkpoint(path: Path, device: torch.device) -> tuple[OneStageDetector, cfg.Config]:
    """The trained model and the config it was trained with, from a checkpoint file."""
    return trained_model(checkpoint.load(path), path, device)


def trained_model(state: dict, path: Path, device: torch.device) -> tuple[OneStageDetector, cfg.Config]:
    """The model of the checkpoint ``state`` read from ``path`` and the config it was trained with.

    The model is built without its pretrained weights, which the checkpoint replaces: evaluating
    never needs (or downloads) the ImageNet file. A class count that its classification layer does
    not fit is refused before the model is built (a huge one would not fit in memory).
    """
    config = cfg.from_dict(state["config"], str(path))
    num_classes = state["num_classes"]
    logits = state["model"].get("head.cls_logits.bias")
    expected = num_classes * anchors_per_location(config.model.anchors)
    if num_classes < 1 or not isinstance(logits, torch.Tensor) or logits.shape != (expected,):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else None
        raise UserError(
            f"{path}: its weights do not fit this model (num_classes = {num_classes} needs head.cls_logits.bias "
            f"of shape ({expected},), it holds {shape}); it was saved by another config or another version: "
            "delete it or pass the matching checkpoint"
        )
    untrained = dataclasses.replace(config.model.backbone, weights="")
    model = OneStageDetector(dataclasses.replace(config.model, backbone=untrained), num_classes)
    checkpoint.restore(path, lambda: model.load_state_dict(state["model"]))
    return model.to(device), config
