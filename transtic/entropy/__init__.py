"""Deterministic entropy-parameter computation (see docs/bitstream.md)."""

from .fixed_point import FixedPointHyperSynthesis

__all__ = ["FixedPointHyperSynthesis"]
