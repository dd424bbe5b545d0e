"""Turn an official ATSS checkpoint (sfzhang15/ATSS model zoo) into an atssrepro run folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from atssrepro import config as cfg
from atssrepro.engine import checkpoint as ckpt
from atssrepro.engine.run_dir import RunDir
from atssrepro.engine.run_state import RunState
from atssrepro.errors import UserError
from atssrepro.fileio import sha256
from atssrepro.model.anchors import anchors_per_location
from atssrepro.model.official_checkpoint import convert_official_state_dict, read_official_checkpoint


def import_official_checkpoint(checkpoint: Path, config: cfg.Config, out: Path) -> Path:
    """Write the run folder ``out`` (config.toml, run.json, checkpoint.pt) holding the official
    ``checkpoint`` converted for ``config``, ready for ``atssrepro eval`` (and ``--tta``).

    ``config`` must describe the checkpoint's model (e.g. the built-in ``atss_dcnv2_r101_fpn_2x``);
    its ``model.backbone.weights`` is cleared, since the checkpoint holds every weight. Returns ``out``.
    """
    checkpoint = Path(checkpoint)
    state = read_official_checkpoint(checkpoint)
    if config.model.backbone.style != "msra":
        raise UserError("official checkpoints need model.backbone.style = 'msra' (the official backbone)")
    backbone = dataclasses.replace(config.model.backbone, weights="")
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, backbone=backbone))
    model = convert_official_state_dict(state, config.model)
    run = RunDir(out)
    if run.checkpoint_path.exists():
        raise UserError(f"--out {out}: already holds a checkpoint; pick another folder or delete it")
    run.init(config, preset="import")
    ckpt.save(
        run.checkpoint_path,
        {
            "model": model,
            "config": cfg.to_dict(config),
            "iteration": config.train.iterations,
            "num_classes": model["head.cls_logits.bias"].shape[0] // anchors_per_location(config.model.anchors),
        },
    )
    run.set_state(RunState.DONE, imported_from=str(checkpoint.resolve()), imported_sha256=sha256(checkpoint))
    return run.path
