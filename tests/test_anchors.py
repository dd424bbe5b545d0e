"""Anchors as the official generator makes them: rounded shapes for ratios 0.5 and 2, ratio-major order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from atssrepro.model.anchors import STRIDES, cell_anchors, grid_anchors

OFFICIAL_KEYS = Path(__file__).resolve().parents[1] / ".." / "shared" / "official_ref" / "keys" / "ATSS_BOX.json"

# (w, h) of the official 8S anchors on P3..P7: _ratio_enum rounds the stride-sized base box
# (w0 = round(sqrt(S^2 / r)), h0 = round(w0 * r), half to even), _scale_enum multiplies by 8.
OFFICIAL_8S = {
    0.5: [(88, 48), (184, 96), (360, 176), (728, 368), (1448, 720)],
    2.0: [(48, 96), (88, 176), (184, 368), (360, 720), (728, 1456)],
    0.25: [(128, 32), (256, 64), (512, 128), (1024, 256), (2048, 512)],
    1.0: [(64, 64), (128, 128), (256, 256), (512, 512), (1024, 1024)],
}


def sizes(anchors: torch.Tensor) -> list[tuple[float, float]]:
    return [(w, h) for w, h in (anchors[:, 2:] - anchors[:, :2]).tolist()]


@pytest.mark.parametrize("ratio", sorted(OFFICIAL_8S))
def test_8s_anchor_shapes_are_the_official_rounded_ones(ratio: float) -> None:
    for stride, expected in zip(STRIDES, OFFICIAL_8S[ratio]):
        anchors = cell_anchors(stride, 8.0, (ratio,), 1)
        assert sizes(anchors) == [expected], (stride, ratio)
        assert anchors.sum(0)[:2].tolist() == [-x for x in anchors.sum(0)[2:].tolist()]  # centred on the origin


def test_order_is_ratio_major_with_octave_scales_inside() -> None:
    anchors = cell_anchors(8, 4.0, (0.5, 1.0, 2.0), 3)  # the original RetinaNet's 9 anchors on P3
    octaves = [2.0 ** (i / 3) for i in range(3)]
    expected = [(w0 * 4 * o, h0 * 4 * o) for w0, h0 in [(11, 6), (8, 8), (6, 12)] for o in octaves]
    torch.testing.assert_close(torch.tensor(sizes(anchors)), torch.tensor(expected))


def test_grid_anchors_follow_the_cell_order_at_each_location() -> None:
    anchors, counts = grid_anchors([(2, 3)], 8.0, (0.5, 1.0, 2.0), 1)
    assert counts == [18]
    cell = cell_anchors(8, 8.0, (0.5, 1.0, 2.0), 1)
    # location (row 1, column 2) is the 6th location, row-major; its A = 3 anchors follow one another
    torch.testing.assert_close(anchors[5 * 3 : 6 * 3], cell + torch.tensor([20.0, 12.0, 20.0, 12.0]))


def test_square_anchors_equal_the_official_cell_anchors() -> None:
    if not OFFICIAL_KEYS.is_file():
        pytest.skip("../shared/official_ref is absent")
    tensors = json.loads(OFFICIAL_KEYS.read_text())["tensors"]
    official = [t["value"] for t in tensors if t["key"].startswith("rpn.anchor_generator.cell_anchors.")]
    assert len(official) == 5
    for stride, value in zip(STRIDES, official):
        ours = cell_anchors(stride, 8.0, (1.0,), 1) + stride / 2  # the anchor of location (0, 0)
        # official "+1" pixel boxes cover [x1 - 0.5, x2 + 0.5] in continuous coordinates
        torch.testing.assert_close(ours, torch.tensor(value) + torch.tensor([-0.5, -0.5, 0.5, 0.5]))
