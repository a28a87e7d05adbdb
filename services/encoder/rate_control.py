"""Per-stream rate control: choose each frame's quality to meet a bits-per-pixel or kbit/s target.

The codec offers a few discrete qualities, so a target between two of them is met on average
by alternating. The controller keeps, per quality, a running estimate of the bpp it produces
on the current content, and a bit budget: ``debt`` is the bits spent beyond the target so far.
Each frame gets an effective target ``target - debt / horizon`` (the debt is paid back over
``horizon`` frames) and the quality whose estimate is nearest to it is chosen; qualities never
tried are extrapolated from measured ones and explored one step at a time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from transtic.weights.shipped import preferred_quality


@dataclass(frozen=True)
class RateTarget:
    """Either ``bpp`` or ``kbps`` (at ``fps``): the target bits of a frame of ``pixels``."""

    bpp: float | None = None
    kbps: float | None = None
    fps: float = 10.0

    def __post_init__(self) -> None:
        if (self.bpp is None) == (self.kbps is None):
            raise ValueError("a rate target needs exactly one of bpp or kbps")
        if (self.bpp or self.kbps or 0) <= 0 or self.fps <= 0:
            raise ValueError("rate targets and fps must be positive")

    def frame_bits(self, pixels: int) -> float:
        if self.bpp is not None:
            return self.bpp * pixels
        assert self.kbps is not None
        return self.kbps * 1000.0 / self.fps

    def describe(self) -> str:
        if self.bpp is not None:
            return f"{self.bpp:g} bpp"
        return f"{self.kbps:g} kbit/s at {self.fps:g} fps"


@dataclass
class RateStats:
    frames: int = 0
    bits: float = 0.0
    pixels: int = 0
    target_bits: float = 0.0
    qualities: Counter[int] = field(default_factory=Counter)

    @property
    def bpp(self) -> float:
        return self.bits / self.pixels if self.pixels else 0.0

    @property
    def target_bpp(self) -> float:
        return self.target_bits / self.pixels if self.pixels else 0.0

    def kbps(self, fps: float) -> float:
        """Bit rate if the frames were played at ``fps``."""
        return self.bits / self.frames * fps / 1000.0 if self.frames else 0.0


class RateController:
    """Pick a quality per frame; call :meth:`update` with what the frame really cost."""

    def __init__(
        self,
        qualities: Sequence[int],
        target: RateTarget | None = None,
        *,
        fixed_quality: int | None = None,
        smoothing: float = 0.3,
        horizon: float = 2.0,
        step_ratio: float = 1.6,
    ) -> None:
        if not qualities:
            raise ValueError("no qualities to choose from")
        self.qualities = sorted(set(qualities))
        if fixed_quality is not None and fixed_quality not in self.qualities:
            raise ValueError(f"quality {fixed_quality} is not among {self.qualities}")
        self.target = target
        self.fixed_quality = fixed_quality
        self.smoothing = smoothing
        self.horizon = horizon
        # Untried qualities are assumed to cost this factor more per step up: about what the
        # doubling lambdas of the TransTIC quality ladder give.
        self.step_ratio = step_ratio
        self.estimates: dict[int, float] = {}
        self.stats = RateStats()
        self._debt = 0.0  # bits spent above the target so far (negative: saved)

    def restrict(self, allowed: Sequence[int]) -> None:
        """Choose only among ``allowed`` from now on (e.g. the qualities whose codec the
        analytics side holds); what was learnt about those qualities is kept."""
        kept = sorted(set(allowed))
        if not kept:
            raise ValueError("no qualities to choose from")
        if self.fixed_quality is not None and self.fixed_quality not in kept:
            raise ValueError(f"quality {self.fixed_quality} is not among {kept}")
        self.qualities = kept
        self.estimates = {q: bpp for q, bpp in self.estimates.items() if q in kept}

    def effective_bpp(self, pixels: int) -> float | None:
        """This frame's target in bpp including the budget correction (None without a target)."""
        if self.target is None:
            return None
        bits = self.target.frame_bits(pixels) - self._debt / self.horizon
        # Never aim at zero or below: the lowest quality is the floor anyway.
        return max(bits, 0.05 * self.target.frame_bits(pixels)) / pixels

    def estimate(self, quality: int) -> float | None:
        """Expected bpp of ``quality``: measured, else extrapolated from the nearest measured."""
        if quality in self.estimates:
            return self.estimates[quality]
        if not self.estimates:
            return None
        index = self.qualities.index(quality)
        nearest = min(self.estimates, key=lambda q: abs(self.qualities.index(q) - index))
        steps = index - self.qualities.index(nearest)
        return self.estimates[nearest] * self.step_ratio**steps

    def choose(self, pixels: int) -> int:
        if self.target is None:
            return self.fixed_quality or preferred_quality(self.qualities)
        goal = self.effective_bpp(pixels)
        assert goal is not None
        if not self.estimates:
            return self.qualities[0]  # start cheap: an overshoot costs more than a dip
        # Explore upwards one step at a time: a guess two steps above anything measured is
        # too unreliable to risk the overshoot.
        ceiling = min(self.qualities.index(max(self.estimates)) + 1, len(self.qualities) - 1)
        allowed = self.qualities[: ceiling + 1]
        # Nearest, not "closest below": with the debt feedback this is a sigma-delta
        # modulator, so the running average lands on the target even in short runs, where
        # always rounding down would leave it biased low.
        return min(allowed, key=lambda q: abs((self.estimate(q) or 0.0) - goal))

    def update(self, quality: int, bits: float, pixels: int) -> None:
        bpp = bits / pixels
        previous = self.estimates.get(quality)
        if previous is None:
            self.estimates[quality] = bpp
        else:
            self.estimates[quality] = (1 - self.smoothing) * previous + self.smoothing * bpp
            # Content changes move every quality's cost alike; nudge the others along so a
            # quality unused for a while is not judged on stale content.
            ratio = (bpp / previous) ** (self.smoothing / 2) if previous > 0 else 1.0
            for q in self.estimates:
                if q != quality:
                    self.estimates[q] *= ratio
        target_bits = self.target.frame_bits(pixels) if self.target is not None else bits
        # Anti-windup: an unreachable target (below the lowest or above the highest quality)
        # must not bank a debt that would skew the rate long after the content changes.
        limit = 2 * self.horizon * target_bits
        self._debt = min(max(self._debt + bits - target_bits, -limit), limit)
        s = self.stats
        s.frames += 1
        s.bits += bits
        s.pixels += pixels
        s.target_bits += target_bits
        s.qualities[quality] += 1
