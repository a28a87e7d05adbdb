"""Evaluation: rate (real bitstreams) versus task quality, anchors and BD-rates."""

from .bdrate import BDRateError, bd_rate, bd_rate_or_none
from .cli import eval_main
from .runner import EvalSet, Point, TaskScorer, evaluate, load_eval_set

__all__ = [
    "BDRateError",
    "EvalSet",
    "Point",
    "TaskScorer",
    "bd_rate",
    "bd_rate_or_none",
    "eval_main",
    "evaluate",
    "load_eval_set",
]
