"""Test-only fault injection for real ``atssrepro`` processes; no part of atssrepro.

Python imports ``sitecustomize`` at start-up from the path, so a test that puts this folder on
PYTHONPATH and sets ATSSREPRO_TEST_FAULT gets, in every run it starts:

- ``worker``: a RuntimeError raised in a DataLoader worker, on its first sample;
- ``after_checkpoint``: a RuntimeError raised in the main process right after the first checkpoint.

ATSSREPRO_TEST_FAULT_RUN (a run folder name) and ATSSREPRO_TEST_FAULT_RANK (a DDP rank) restrict
the fault to one run, or one rank.
"""

from __future__ import annotations

import os

FAULT = os.environ.get("ATSSREPRO_TEST_FAULT")

if FAULT:
    import torch.utils.data

    from atssrepro import distributed
    from atssrepro.data.coco import CocoDetection
    from atssrepro.engine import checkpoint
    from atssrepro.engine import run as run_module

    armed = False
    train, get_item, save = run_module.train, CocoDetection.__getitem__, checkpoint.save

    def armed_train(config, run, *args):
        global armed
        wanted_run = os.environ.get("ATSSREPRO_TEST_FAULT_RUN", run.path.name)
        wanted_rank = int(os.environ.get("ATSSREPRO_TEST_FAULT_RANK", distributed.rank()))
        armed = run.path.name == wanted_run and distributed.rank() == wanted_rank
        return train(config, run, *args)

    def faulty_get_item(self, index):
        if armed and FAULT == "worker" and torch.utils.data.get_worker_info() is not None:
            raise RuntimeError("injected fault in a DataLoader worker")
        return get_item(self, index)

    def faulty_save(path, state):
        save(path, state)
        if armed and FAULT == "after_checkpoint":
            raise RuntimeError("injected fault after a checkpoint")

    run_module.train = armed_train
    CocoDetection.__getitem__ = faulty_get_item
    checkpoint.save = faulty_save
