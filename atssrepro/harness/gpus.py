"""The ``--gpus`` list of the local queue, read without torch: ``run`` checks its options before it
checks its inputs and imports torch."""

from __future__ import annotations

import re

from atssrepro.errors import UserError


def parse_gpus(gpus: str) -> list[str]:
    """The devices of ``--gpus`` ("0,1,3"; "cpu0,cpu1" makes CPU slots; GPU or MIG UUIDs)."""
    devices = [device.strip() for device in gpus.split(",")]
    if not all(re.fullmatch(r"\d+|cpu\d*|(GPU|MIG)-[\w-]+", device) for device in devices):
        raise UserError(f"--gpus {gpus!r}: expected GPU ids separated by commas, e.g. --gpus 0,1,2,3")
    return devices
