"""Checkpoints carry a checksum: a file changed on disk is refused in one line, never loaded changed."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from atssrepro.engine import checkpoint
from atssrepro.errors import UserError

from cli import TINY, assert_one_line_error, atssrepro

SHORT = [*TINY, "--set", "train.iterations=2", "--set", "train.lr_steps=[1]", "--set", "train.warmup_iters=1"]


@pytest.fixture(scope="module")
def trained(synth_coco: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder of a real (short) smoke training: its checkpoint holds every entry a run saves."""
    run = tmp_path_factory.mktemp("checkpoint") / "run"
    atssrepro("train", *SHORT, "--data", str(synth_coco), "--out", str(run))
    return run


def same(a: object, b: object) -> bool:
    """Bit-exact equality of two checkpoint states: tensors by dtype, shape and bytes."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        return a.dtype == b.dtype and a.shape == b.shape and a.numpy().tobytes() == b.numpy().tobytes()
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b


def places(path: Path) -> dict[str, int]:
    """Byte offsets in the zip file of a torch checkpoint: headers, the pickle, tensor storage, the index."""
    data = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        records = {info.filename.split("/", 1)[1]: info for info in archive.infolist()}
    start = {}
    for name, info in records.items():
        lengths = data[info.header_offset + 26 : info.header_offset + 30]  # file name, extra field
        start[name] = (
            info.header_offset + 30 + int.from_bytes(lengths[:2], "little") + int.from_bytes(lengths[2:], "little")
        )
    pickle_start, pickle_size = start["data.pkl"], records["data.pkl"].file_size
    pickle = data[pickle_start : pickle_start + pickle_size]
    storages = sorted((info.file_size, name) for name, info in records.items() if name.startswith("data/"))
    biggest = storages[-1][1]
    central = data.rfind(b"PK\x01\x02", 0, len(data))  # the last central directory entry
    return {
        "local header of data.pkl (its name)": records["data.pkl"].header_offset + 32,
        "pickle: opcodes at its start": pickle_start + 2,
        "pickle: a fifth in": pickle_start + pickle_size // 5,
        "pickle: the middle": pickle_start + pickle_size // 2,
        "pickle: near its end": pickle_start + pickle_size - 8,
        "pickle: a config string": pickle_start + pickle.index(b"resnet18") + 2,
        "pickle: the iteration count key": pickle_start + pickle.index(b"iteration") + 1,
        "pickle: the checksum key": pickle_start + pickle.index(checkpoint.CHECKSUM.encode()) + 1,
        "pickle: the checksum's digits": pickle_start + pickle.index(checkpoint.CHECKSUM.encode()) + 20,
        "storage: start of the first tensor": start[storages[0][1]],
        "storage: middle of the biggest tensor": start[biggest] + records[biggest].file_size // 2,
        "storage: last byte of the biggest tensor": start[biggest] + records[biggest].file_size - 1,
        "byteorder record": start["byteorder"],
        "local header of the biggest tensor (its size)": records[biggest].header_offset + 20,
        "middle of the file": len(data) // 2,
        "central directory (last entry)": central + 10,
        "end of central directory": len(data) - 10,
    }


@pytest.mark.slow
def test_flipped_bytes_anywhere_are_refused_or_change_nothing(trained: Path, tmp_path: Path) -> None:
    original = trained / "checkpoint.pt"
    reference = checkpoint.load(original)
    data = original.read_bytes()
    refused = {}
    for where, offset in places(original).items():
        damaged = bytearray(data)
        for i in range(offset, min(offset + 2, len(data))):
            damaged[i] ^= 0x5A
        path = tmp_path / "checkpoint.pt"
        path.write_bytes(damaged)
        try:
            state = checkpoint.load(path)
        except UserError as e:
            message = str(e)
            assert "\n" not in message and message.startswith(f"{path}: ") and "delete it" in message, (where, message)
            assert "weights_only" not in message, message  # no advice to load it unsafely
            refused[where] = message
            continue
        assert same(state, reference), f"{where}: loaded with a changed content"
    # Changed weights and changed values are refused, not only the files the reader cannot parse.
    changed = [w for w in places(original) if w.startswith(("storage", "pickle: a config", "pickle: the", "middle"))]
    changed.remove("pickle: the middle")  # may land on a memo index, which changes nothing loaded
    assert set(changed) <= set(refused), set(changed) - set(refused)


def test_checkpoints_without_a_checksum_still_load(trained: Path, tmp_path: Path) -> None:
    state = checkpoint.load(trained / "checkpoint.pt")
    assert checkpoint.CHECKSUM not in state
    torch.save(state, tmp_path / "old.pt")  # as the versions before checksums wrote it
    assert same(checkpoint.load(tmp_path / "old.pt"), state)
    torch.save({**state, "shaX56": "0" * 64}, tmp_path / "renamed.pt")  # a damaged checksum entry's name
    with pytest.raises(UserError, match="unknown entries 'shaX56' and no checksum"):
        checkpoint.load(tmp_path / "renamed.pt")


@pytest.mark.slow
def test_a_changed_checkpoint_stops_eval_and_resume_in_one_line(
    trained: Path, synth_coco: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    path = run / "checkpoint.pt"
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4] = bytes(b ^ 0xFF for b in data[middle : middle + 4])
    path.write_bytes(data)
    assert_one_line_error(atssrepro("eval", str(run), check=False), str(path), "corrupt checkpoint", "delete it")
    assert_one_line_error(atssrepro("eval", str(path), check=False), str(path), "corrupt checkpoint")
    (run / "metrics.json").unlink()  # unfinished: the next start resumes from the checkpoint
    result = atssrepro("train", *SHORT, "--data", str(synth_coco), "--out", str(run), check=False)
    assert_one_line_error(result, str(path), "corrupt checkpoint")


def test_a_class_count_its_weights_do_not_fit_is_refused_before_building_the_model(trained: Path, tmp_path: Path):
    state = checkpoint.load(trained / "checkpoint.pt")
    path = tmp_path / "checkpoint.pt"
    torch.save({**state, "num_classes": 10**9}, path)  # no checksum: as an older version, or another tool, wrote it
    result = atssrepro("eval", str(path), check=False)
    assert_one_line_error(result, str(path), "num_classes = 1000000000", "it holds (6,)")
