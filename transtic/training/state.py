"""A run's portable state: only what it trains, small enough to commit with the code.

A run's checkpoint holds the whole model, the frozen base codec included, and float32
optimizer moments: 23 MB for the small prompt runs. A training campaign that goes on
across sessions resumes instead from the trained tensors alone (float32, in the order
the optimizer holds them) and Adam's moments in bfloat16, about 8 bytes per trained
parameter; everything else is rebuilt by the command line that started the run (base
codec, initial prompts). bfloat16 keeps the moments' range (the second moment reaches
1e-12, below float16's smallest number); their precision matters far less than the
parameters', which stay float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..models.checkpoint import atomic_save

if TYPE_CHECKING:
    from .loop import Trainer

FORMAT = 1
MOMENTS = ("exp_avg", "exp_avg_sq")


def _pack_optimizer(state: dict[str, Any]) -> dict[str, Any]:
    per_param = {
        index: {k: v.to(torch.bfloat16) if k in MOMENTS else v for k, v in entry.items()}
        for index, entry in state["state"].items()
    }
    return {"state": per_param, "param_groups": state["param_groups"]}


def _unpack_optimizer(state: dict[str, Any]) -> dict[str, Any]:
    per_param = {
        index: {k: v.float() if k in MOMENTS else v for k, v in entry.items()}
        for index, entry in state["state"].items()
    }
    return {"state": per_param, "param_groups": state["param_groups"]}


def save_portable(trainer: Trainer, path: Path) -> None:
    """Write the trained tensors, the optimizers and the counters of ``trainer``."""
    aux = trainer.aux_optimizer
    aux_params = [p for g in aux.param_groups for p in g["params"]] if aux is not None else []
    state: dict[str, Any] = {
        "format": FORMAT,
        "step": trainer.step,
        "elapsed": trainer.elapsed,
        "cpu_seconds": trainer.cpu_seconds,
        "samples": trainer.step * trainer.cfg.batch_size,
        "params": [p.detach().float().cpu().clone() for p in trainer.params],
        "aux_params": [p.detach().float().cpu().clone() for p in aux_params],
        "optimizer": _pack_optimizer(trainer.optimizer.state_dict()),
        "rng": {"torch": torch.get_rng_state()},
    }
    if aux is not None:
        state["aux_optimizer"] = _pack_optimizer(aux.state_dict())
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(state, path)


def load_portable(trainer: Trainer, path: Path) -> None:
    """Put a portable state into a trainer built as the run that wrote it was."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a portable training state of format {FORMAT}")
    aux = trainer.aux_optimizer
    aux_params = [p for g in aux.param_groups for p in g["params"]] if aux is not None else []
    for kind, ours, saved in (
        ("trained", trainer.params, state["params"]),
        ("aux", aux_params, state["aux_params"]),
    ):
        shapes = [tuple(p.shape) for p in ours]
        if shapes != [tuple(t.shape) for t in saved]:
            raise ValueError(
                f"{path}: its {kind} tensors do not fit this run's ({len(saved)} saved, "
                f"{len(ours)} here): was it written by another model or command line?"
            )
        with torch.no_grad():
            for p, t in zip(ours, saved, strict=True):
                p.copy_(t.to(p.device, p.dtype))
    trainer.optimizer.load_state_dict(_unpack_optimizer(state["optimizer"]))
    if aux is not None and "aux_optimizer" in state:
        aux.load_state_dict(_unpack_optimizer(state["aux_optimizer"]))
    trainer.step = int(state["step"])
    trainer.elapsed = float(state["elapsed"])
    trainer.cpu_seconds = float(state["cpu_seconds"])
    if trainer.dist.world == 1:
        torch.set_rng_state(state["rng"]["torch"])
