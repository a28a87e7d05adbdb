"""Rate control against a fake codec whose bits per pixel per quality are known."""

from __future__ import annotations

import random

import pytest

from services.encoder.rate_control import RateController, RateTarget

BPP = {1: 0.1, 2: 0.2, 3: 0.4, 4: 0.8}


def run(
    controller: RateController,
    frames: int,
    pixels: int = 64 * 64,
    seed: int = 0,
    content: float = 1.0,
) -> list[int]:
    """Feed frames with +-15% noise per frame; ``content`` scales every quality's cost."""
    rng = random.Random(seed)
    chosen = []
    for _ in range(frames):
        q = controller.choose(pixels)
        controller.update(q, BPP[q] * content * rng.uniform(0.85, 1.15) * pixels, pixels)
        chosen.append(q)
    return chosen


@pytest.mark.parametrize("target", [0.15, 0.3, 0.5, 0.7])
def test_average_rate_converges_to_a_reachable_target(target: float) -> None:
    controller = RateController(list(BPP), RateTarget(bpp=target))
    chosen = run(controller, 80)
    assert controller.stats.bpp == pytest.approx(target, rel=0.05)
    # meeting a target between two qualities means using both
    assert len(set(chosen[-40:])) >= 2


@pytest.mark.parametrize(("target", "quality"), [(0.03, 1), (2.0, 4)])
def test_unreachable_targets_pin_the_nearest_quality(target: float, quality: int) -> None:
    controller = RateController(list(BPP), RateTarget(bpp=target))
    chosen = run(controller, 40)
    assert chosen[-20:] == [quality] * 20


def test_kbps_target_at_fps() -> None:
    target = RateTarget(kbps=100.0, fps=10.0)
    controller = RateController(list(BPP), target)
    pixels = 320 * 240  # 10 kbit per frame = 0.13 bpp
    run(controller, 80, pixels=pixels)
    assert controller.stats.kbps(10.0) == pytest.approx(100.0, rel=0.05)
    assert target.frame_bits(pixels) == pytest.approx(10_000)


def test_adapts_when_content_gets_harder() -> None:
    controller = RateController(list(BPP), RateTarget(bpp=0.3))
    run(controller, 40)
    before = controller.stats.bits, controller.stats.pixels
    chosen = run(controller, 60, seed=1, content=2.0)  # every quality now costs twice as much
    bits, pixels = controller.stats.bits - before[0], controller.stats.pixels - before[1]
    assert bits / pixels == pytest.approx(0.3, rel=0.1)
    assert 3 not in chosen[-30:] and 4 not in chosen[-30:]


def test_without_target_the_fixed_or_default_quality_is_used() -> None:
    # The default quality of every entry point (3) where offered, else the lowest.
    assert set(run(RateController([3, 1, 2]), 5)) == {3}
    assert set(run(RateController([2, 1]), 5)) == {1}
    assert set(run(RateController(list(BPP), fixed_quality=3), 5)) == {3}
    with pytest.raises(ValueError):
        RateController([1, 2], fixed_quality=5)


def test_targets_validate() -> None:
    with pytest.raises(ValueError):
        RateTarget()
    with pytest.raises(ValueError):
        RateTarget(bpp=0.1, kbps=5)
    with pytest.raises(ValueError):
        RateTarget(bpp=-1)
    assert RateTarget(kbps=50, fps=5).describe() == "50 kbit/s at 5 fps"


def test_restricted_controller_chooses_only_the_allowed_qualities() -> None:
    controller = RateController(list(BPP), RateTarget(bpp=2.0))
    assert run(controller, 20)[-5:] == [4] * 5  # climbs to the top quality
    controller.restrict([1, 3])  # e.g. the analytics side serves only these
    chosen = run(controller, 30)
    assert set(chosen) <= {1, 3} and chosen[-10:] == [3] * 10
    assert set(controller.estimates) <= {1, 3}
    with pytest.raises(ValueError):
        controller.restrict([])
    with pytest.raises(ValueError):
        RateController(list(BPP), fixed_quality=4).restrict([1, 2])
