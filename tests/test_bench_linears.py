"""scripts/bench_linears.py: the row counts it weighs Linear timings by, and its timings.

Nothing is timed against a bound; the row counts are checked against the model's shape.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from transtic.models import create_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import bench_linears  # noqa: E402


def test_rows_per_mp_counts_every_quantised_linear_call():
    torch.manual_seed(0)
    model = create_model("transtic-tiny").eval()
    counts = bench_linears.rows_per_mp(model)
    sides = {side for side, _, _ in counts}
    assert sides == {"encode", "decode"}
    n = model.config.N
    # the first analysis stage works at half resolution: at least a quarter of the
    # image's pixels as tokens, through qkv once per block
    first_stage_blocks = model.config.depths[0]
    qkv_rows = counts[("encode", n, 3 * n)]
    assert qkv_rows >= first_stage_blocks * 1e6 / 4
    # fc1 and fc2 see the same rows
    assert counts[("encode", n, 2 * n)] == counts[("encode", 2 * n, n)]
    # the last synthesis stage works at half resolution too
    assert counts[("decode", n, 3 * n)] >= model.config.depths[-1] * 1e6 / 4


def test_every_variant_is_timed_or_reported_missing():
    per_row = bench_linears.time_shape(32, 64, repeats=1)
    assert set(per_row) == set(bench_linears.VARIANTS)
    assert per_row["float32"] is not None and per_row["float32"] > 0
    assert per_row["int8 dynamic"] is not None and per_row["int8 dynamic"] > 0
    assert per_row["int8, u8 input"] is None or per_row["int8, u8 input"] > 0
