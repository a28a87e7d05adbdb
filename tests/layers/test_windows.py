"""Token orders of shifted-window attention and the window-order residual stream."""

from __future__ import annotations

import pytest
import torch

from transtic.layers.windows import stage_permutations, window_order


@pytest.mark.parametrize(
    "geometries",
    [((8, 0), (8, 4)), ((8, 0), (8, 4), (8, 0), (8, 4)), ((4, 0), (4, 2), (4, 2))],
)
def test_stage_permutations_walk_every_block_order_and_back(geometries):
    h, w = 16, 24
    steps, back = stage_permutations(h, w, geometries)
    tokens = torch.arange(h * w)
    for (window, shift), step in zip(geometries, steps, strict=True):
        if step is not None:
            tokens = tokens[step]
        assert torch.equal(tokens, window_order(h, w, window, shift)[0])
    assert back is not None
    assert torch.equal(tokens[back], torch.arange(h * w))


def test_unchanged_orders_are_skipped():
    # one window covering the whole map without shift is raster order itself
    steps, back = stage_permutations(8, 8, ((8, 0), (8, 0)))
    assert steps == (None, None) and back is None
    # a repeated geometry needs no gather between its blocks
    steps, _ = stage_permutations(16, 16, ((8, 4), (8, 4)))
    assert steps[0] is not None and steps[1] is None
