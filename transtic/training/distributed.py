"""Single process or one rank of a ``torchrun`` job, and the resumable data order."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Single process, or one rank of a ``torchrun`` job when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if world <= 1:
        dev = torch.device("cuda" if cuda else ("cpu" if device == "auto" else device))
        return DistInfo(0, 1, dev)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    dev = torch.device(f"cuda:{local}" if cuda else "cpu")
    return DistInfo(dist.get_rank(), dist.get_world_size(), dev)


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, split across ranks, that can start mid-epoch."""

    def __init__(self, size: int, *, rank: int, world: int, seed: int) -> None:
        self.size, self.rank, self.world, self.seed = size, rank, world, seed
        self.per_rank = size // world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=gen)[: self.per_rank * self.world]
        return iter(order[self.rank :: self.world][self.start :].tolist())

    def __len__(self) -> int:
        return self.per_rank - self.start


def split_batch(global_batch: int, world: int) -> int:
    """Each rank's share of the global batch; an uneven split is refused, as DDP's
    gradient average would then weight samples unequally."""
    if global_batch < 1 or global_batch % world:
        raise ValueError(
            f"the batch of {global_batch} does not split evenly over {world} rank(s); "
            f"give a positive multiple of {world}"
        )
    return global_batch // world
