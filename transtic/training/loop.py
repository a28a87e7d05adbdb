"""One training loop for codec and prompt training: resumable, seeded, DDP-aware.

The step counter is the unit of everything (schedule, checkpoints, data order),
so a resumed run continues exactly where the interrupted one stopped: the data
order is a function of (seed, epoch), the learning rate a function of the step,
and model, optimizers and RNG states come back from the checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..models.checkpoint import atomic_save
from .data import CropDataset
from .distributed import DistInfo, EpochSampler, init_distributed, split_batch
from .losses import psnr
from .state import load_portable, save_portable

log = logging.getLogger("transtic.training")
CHECKPOINT_NAME = "checkpoint.pth.tar"
# Weights of the step with the lowest validation loss so far (what gets exported).
BEST_NAME = "best.pth.tar"


@dataclass
class LoopConfig:
    out_dir: Path
    steps: int
    # The global batch: under torchrun each of the W ranks takes batch_size / W.
    batch_size: int = 8
    lr: float = 1e-4
    aux_lr: float = 1e-3
    clip_max_norm: float = 1.0
    # Fractions of ``steps`` after which the learning rate is multiplied by lr_gamma.
    lr_milestones: tuple[float, ...] = ()
    lr_gamma: float = 0.5
    seed: int = 42
    num_workers: int = 0
    bf16: bool = False
    log_every: int = 10
    checkpoint_every: int = 100
    val_every: int = 0
    device: str = "auto"
    resume: bool = False
    # Also keep the run's portable state here (training/state.py): resumed from when the
    # run directory has no checkpoint, e.g. on another machine or in a later session.
    state_path: Path | None = None
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        d["state_path"] = None if self.state_path is None else str(self.state_path)
        d["lr_milestones"] = list(self.lr_milestones)
        return d


def lr_at(step: int, cfg: LoopConfig, base: float) -> float:
    passed = sum(1 for m in cfg.lr_milestones if step >= int(m * cfg.steps))
    return base * cfg.lr_gamma**passed


def setup_logging(out_dir: Path, main: bool) -> None:
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    if not main:
        log.addHandler(logging.NullHandler())
        return
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    for handler in (logging.FileHandler(out_dir / "train.log"), logging.StreamHandler(sys.stderr)):
        handler.setFormatter(fmt)
        log.addHandler(handler)


def _stop_on_sigterm() -> threading.Event:
    """Set on SIGTERM, so a long job stops after its current step with its state saved
    (a campaign job is stopped this way at the end of every working session)."""
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


Criterion = Callable[[Mapping[str, Any], Tensor], dict[str, Tensor]]


class Trainer:
    """Runs ``cfg.steps`` optimisation steps of ``model`` under ``criterion``.

    ``params`` are optimised with Adam at ``cfg.lr``; ``aux_params`` (the entropy
    bottleneck quantiles of a codec) get their own Adam at ``cfg.aux_lr`` and are
    driven by ``model.aux_loss()``, as in CompressAI. Everything else must already
    have ``requires_grad=False``.
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: nn.Module,
        train_set: CropDataset,
        cfg: LoopConfig,
        *,
        params: Sequence[nn.Parameter],
        aux_params: Sequence[nn.Parameter] = (),
        val_set: CropDataset | None = None,
        dist_info: DistInfo | None = None,
    ) -> None:
        self.cfg = cfg
        self.dist = dist_info or init_distributed(cfg.device)
        self.device = self.dist.device
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        setup_logging(cfg.out_dir, self.dist.main)
        self.core = model.to(self.device)
        self.criterion = criterion.to(self.device)
        self.model: nn.Module = self.core
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            # The entropy-bottleneck quantiles get gradients only from the aux loss,
            # outside DDP's backward: DDP must not track them (its reducer fails on
            # them); their gradients are averaged by hand in train_step instead.
            aux_ids = {id(p) for p in aux_params}
            ignored = [n for n, p in self.core.named_parameters() if id(p) in aux_ids]
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self.core, ignored)
            self.model = DistributedDataParallel(self.core, device_ids=ids)
        self.params = list(params)
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr)
        self.aux_optimizer = torch.optim.Adam(aux_params, lr=cfg.aux_lr) if aux_params else None
        self.train_set, self.val_set = train_set, val_set
        self.sampler = EpochSampler(
            len(train_set), rank=self.dist.rank, world=self.dist.world, seed=cfg.seed
        )
        self.rank_batch = split_batch(cfg.batch_size, self.dist.world)
        self.steps_per_epoch = self.sampler.per_rank // self.rank_batch
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"{len(train_set)} samples cannot fill a batch of {cfg.batch_size} on "
                f"{self.dist.world} rank(s); raise --repeats or lower --batch-size"
            )
        self.step = 0
        self.elapsed = 0.0  # wall seconds over all runs of this job, resumes included
        self.cpu_seconds = 0.0  # this process's CPU time, the same way
        self.best: dict[str, Any] | None = None  # {"step", "val_loss"} of best.pth.tar
        self.history: list[dict[str, Any]] = []
        torch.manual_seed(cfg.seed + self.dist.rank)

    # -- checkpoints ------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.cfg.out_dir / CHECKPOINT_NAME

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "step": self.step,
            "elapsed": self.elapsed,
            "cpu_seconds": self.cpu_seconds,
            "state_dict": self.core.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "config": json.dumps(self.cfg.to_dict(), default=str),
            "best": json.dumps(self.best),
        }
        if torch.cuda.is_available():
            state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
        if self.aux_optimizer is not None:
            state["aux_optimizer"] = self.aux_optimizer.state_dict()
        return state

    def save(self) -> None:
        if self.dist.main:
            atomic_save(self.state(), self.checkpoint_path)
            log.info("checkpoint at step %d -> %s", self.step, self.checkpoint_path)
            if self.cfg.state_path is not None:
                save_portable(self, self.cfg.state_path)

    def load(self, path: Path) -> None:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        self.core.load_state_dict(ckpt["state_dict"])
        self.core.to(self.device)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.aux_optimizer is not None and "aux_optimizer" in ckpt:
            self.aux_optimizer.load_state_dict(ckpt["aux_optimizer"])
        self.step = int(ckpt["step"])
        self.elapsed = float(ckpt.get("elapsed", 0.0))
        self.cpu_seconds = float(ckpt.get("cpu_seconds", 0.0))
        self.best = json.loads(ckpt.get("best", "null"))
        if self.best_path.is_file():
            # The file is the truth: it may be newer than the checkpoint resumed from.
            saved = torch.load(self.best_path, map_location="cpu", weights_only=True)
            self.best = {"step": int(saved["step"]), **saved["validation"]}
        rng = ckpt.get("rng", {})
        if self.dist.world == 1 and "torch" in rng:
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
        log.info("resumed from %s at step %d", path, self.step)

    @property
    def best_path(self) -> Path:
        return self.cfg.out_dir / BEST_NAME

    def consider_best(self, val: Mapping[str, float]) -> bool:
        """Keep the current weights as ``best.pth.tar`` if their validation loss is the
        lowest so far (the untrained step 0 never counts)."""
        loss = val.get("val_loss")
        if not self.dist.main or self.step == 0 or loss is None or not math.isfinite(loss):
            return False
        if self.best is not None and loss >= self.best["val_loss"]:
            return False
        self.best = {"step": self.step, **{k: float(v) for k, v in val.items()}}
        # The checkpoint layout (step, state_dict), so `export` reads either file.
        atomic_save(
            {"step": self.step, "elapsed": self.elapsed, "state_dict": self.core.state_dict(),
             "validation": dict(val)},
            self.best_path,
        )  # fmt: skip
        log.info("best validation loss %.5g at step %d -> %s", loss, self.step, self.best_path)
        return True

    def load_best(self) -> dict[str, Any] | None:
        """Put the best validated weights into the model; their record, or None."""
        if self.best is None or not self.best_path.is_file():
            return None
        ckpt = torch.load(self.best_path, map_location="cpu", weights_only=True)
        self.core.load_state_dict(ckpt["state_dict"])
        return self.best

    # -- loop -------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if not self.cfg.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _loader(self, epoch: int, start_batch: int) -> DataLoader[Any]:
        self.sampler.set_epoch(epoch, start_batch * self.rank_batch)
        self.train_set.set_epoch(epoch)
        return DataLoader(
            self.train_set,
            batch_size=self.rank_batch,
            sampler=self.sampler,
            num_workers=self.cfg.num_workers,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            # Its own generator: creating an iterator must not draw from the global RNG,
            # or a resumed run's training noise would drift from the uninterrupted one.
            generator=torch.Generator().manual_seed(self.cfg.seed + epoch),
        )

    def train_step(self, x: Tensor) -> dict[str, float]:
        self.model.train()
        self.criterion.train()
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, self.cfg, self.cfg.lr)
        self.optimizer.zero_grad(set_to_none=True)
        if self.aux_optimizer is not None:
            self.aux_optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            out = self.model(x)
            terms = self.criterion(out, x)
        loss = terms["loss"]
        metrics = {k: float(v.detach()) for k, v in terms.items()}
        metrics["psnr"] = psnr(out["x_hat"], x)
        if not math.isfinite(metrics["loss"]):
            # Skip the update; a NaN batch would otherwise poison Adam's moments.
            log.warning("non-finite loss at step %d; update skipped", self.step)
            return metrics
        loss.backward()
        if self.cfg.clip_max_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.clip_max_norm)
        self.optimizer.step()
        if self.aux_optimizer is not None:
            aux = self.core.aux_loss()  # type: ignore[operator]
            aux.backward()
            if self.dist.world > 1:
                for group in self.aux_optimizer.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
            self.aux_optimizer.step()
            metrics["aux"] = float(aux.detach())
        return metrics

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean criterion terms over the validation crops, with real rounding (eval mode)."""
        if self.val_set is None or not self.dist.main:
            return {}
        self.core.eval()
        self.criterion.eval()
        sums: dict[str, float] = {}
        for i in range(len(self.val_set)):
            x = self.val_set[i][0][None].to(self.device)
            with self._autocast():
                out = self.core(x)
                terms = {k: float(v) for k, v in self.criterion(out, x).items()}
            terms["psnr"] = psnr(out["x_hat"], x)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
        return {f"val_{k}": v / len(self.val_set) for k, v in sums.items()}

    def _record(self, metrics: dict[str, Any]) -> None:
        if not self.dist.main:
            return
        self.history.append(metrics)
        with open(self.cfg.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        if cfg.resume and self.checkpoint_path.is_file():
            self.load(self.checkpoint_path)
        elif cfg.resume and cfg.state_path is not None and cfg.state_path.is_file():
            load_portable(self, cfg.state_path)
            log.info("resumed from %s at step %d", cfg.state_path, self.step)
        if self.step == 0 and self.val_set is not None and cfg.val_every > 0:
            self._record({"step": 0, **self.validate()})
        start, cpu_start = time.perf_counter(), time.process_time()
        base_elapsed, base_cpu = self.elapsed, self.cpu_seconds
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            desc="train",
            unit="step",
            disable=not (cfg.progress and self.dist.main),
            file=sys.stderr,
        )
        window: dict[str, float] = {}
        count = 0
        stop = _stop_on_sigterm()
        while self.step < cfg.steps and not stop.is_set():
            epoch, offset = divmod(self.step, self.steps_per_epoch)
            for x, _labels in self._loader(epoch, offset):
                metrics = self.train_step(x.to(self.device, non_blocking=True))
                self.step += 1
                self.elapsed = base_elapsed + time.perf_counter() - start
                self.cpu_seconds = base_cpu + time.process_time() - cpu_start
                bar.update(1)
                bar.set_postfix(
                    loss=f"{metrics['loss']:.4f}", bpp=f"{metrics['bpp']:.3f}", refresh=False
                )
                for k, v in metrics.items():
                    window[k] = window.get(k, 0.0) + v
                count += 1
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    mean = {k: v / count for k, v in window.items()}
                    lr = self.optimizer.param_groups[0]["lr"]
                    self._record({"step": self.step, "lr": lr, "elapsed": self.elapsed, **mean})
                    log.info(
                        "step %d/%d %s",
                        self.step,
                        cfg.steps,
                        " ".join(f"{k}={v:.4g}" for k, v in mean.items()),
                    )
                    window, count = {}, 0
                if cfg.val_every > 0 and self.step % cfg.val_every == 0:
                    val = self.validate()
                    if val:
                        self._record({"step": self.step, **val})
                        log.info("validation %s", " ".join(f"{k}={v:.4g}" for k, v in val.items()))
                        self.consider_best(val)
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps or stop.is_set():
                    self.save()
                if self.step >= cfg.steps or stop.is_set():
                    break
        bar.close()
        if stop.is_set():
            log.info("stopped by SIGTERM at step %d (saved)", self.step)
            raise SystemExit(0)
        if self.dist.world > 1:
            dist.barrier()
        return {"step": self.step, "elapsed": self.elapsed, "history": self.history}
