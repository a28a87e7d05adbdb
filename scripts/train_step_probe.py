"""Time one training step (forward, backward, Adam) of candidate TIC sizes on this CPU.

Used to pick the shipped ``tic-small`` (see transtic/weights/data/MODEL_CARD.md).
Prints the best of three steps on a batch of two 256x256 crops. Usage:

    python scripts/train_step_probe.py [THREADS]
"""

from __future__ import annotations

import sys
import time

import torch

from transtic.models import TIC, CodecConfig

CANDIDATES: dict[str, dict] = {
    "tiny (N32 M48)": {"N": 32, "M": 48, "num_heads": (2, 2, 2, 4, 4, 4)},
    "N64 M96": {"N": 64, "M": 96, "num_heads": (4, 4, 4, 8, 8, 8)},
    "N64 M96 depth 2": {
        "N": 64, "M": 96, "depths": (2, 2, 2, 2, 2, 2), "num_heads": (4, 4, 4, 8, 8, 8)
    },
    "N48 M64 depth 2 (tic-small)": {
        "N": 48, "M": 64, "depths": (2, 2, 2, 2, 2, 2), "num_heads": (4, 4, 4, 4, 4, 4)
    },
}  # fmt: skip


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    torch.manual_seed(0)
    x = torch.rand(2, 3, 256, 256)
    for name, config in CANDIDATES.items():
        model = TIC(CodecConfig(**config)).train()
        optimizer = torch.optim.Adam(model.parameters(), 1e-4)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            out = model(x)
            rate = sum(lk.log().sum() for lk in out["likelihoods"].values())
            loss = out["x_hat"].pow(2).mean() + 1e-6 * rate
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
        params = sum(p.numel() for p in model.parameters())
        print(f"{name}: {params / 1e6:.2f} M parameters, {min(times):.2f} s/step")


if __name__ == "__main__":
    main()
