"""Read and write codec checkpoints, including the paper's release files as they are.

Loading never unpickles code (``weights_only=True``). The architecture is inferred
from the keys and shapes, so one function reads base codecs, prompted models, the
N=128/M=192 and N=192/M=320 families, float16 copies and DataParallel dumps.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .base import CodecConfig, HyperpriorCodec, PromptConfig
from .entropy import legacy_to_modern_key
from .tic import TIC, TransTIC

# Entropy-coder tables: rebuilt from the weights by update() when a file leaves them out.
CDF_BUFFERS = {"_quantized_cdf", "_offset", "_cdf_length", "scale_table"}


class CheckpointError(ValueError):
    """The file is not a codec checkpoint this library understands."""


def _unwrap(obj: Any) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError("checkpoint holds no state dict")
    state: dict[str, Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise CheckpointError(f"unexpected entry {key!r} in state dict")
        state[key.removeprefix("module.")] = value
    return state


def normalize_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Strip wrappers, cast floating tensors to float32 and use modern entropy-bottleneck names."""
    out: dict[str, Tensor] = {}
    for key, value in _unwrap(state).items():
        if value.is_floating_point():
            value = value.float()
        out[legacy_to_modern_key(key)] = value
    return out


def _count(state: Mapping[str, Tensor], stage: str) -> int:
    prefix = f"{stage}.residual_group.blocks."
    return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})


def infer_architecture(state: Mapping[str, Tensor]) -> tuple[CodecConfig, PromptConfig | None]:
    """Recover the model family and sizes from a (normalized) state dict."""
    try:
        n = state["g_a0.weight"].shape[0]
        m = state["g_a6.weight"].shape[0]
        stages = ("g_a1", "g_a3", "g_a5", "g_a7", "h_a1", "h_a3")
        depths = tuple(_count(state, s) for s in stages)
        heads = tuple(
            state[f"{s}.residual_group.blocks.0.attn.relative_position_bias_table"].shape[1]
            for s in stages
        )
        table = state["g_a1.residual_group.blocks.0.attn.relative_position_bias_table"].shape[0]
        mlp_hidden = state["g_a1.residual_group.blocks.0.mlp.fc1.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"not a TIC/TransTIC checkpoint: missing {exc.args[0]}") from exc
    window = (int(round(table**0.5)) + 1) // 2
    config = CodecConfig(
        N=n, M=m, depths=depths, num_heads=heads, window=window, mlp_ratio=mlp_hidden / n
    )
    if "g_a0_prompt.classifier.0.weight" not in state:
        return config, None
    blocks = tuple(
        i + 1
        for i, s in enumerate(("g_s0", "g_s2", "g_s4", "g_s6"))
        if f"{s}.residual_group.prompt_embeddings" in state
    )
    tokens = next(
        (
            state[f"{s}.residual_group.prompt_embeddings"].shape[1]
            for s in ("g_s0", "g_s2", "g_s4", "g_s6")
            if f"{s}.residual_group.prompt_embeddings" in state
        ),
        PromptConfig().num_tokens,
    )
    prompts = PromptConfig(
        num_tokens=tokens,
        decoder_blocks=blocks,
        generator_channels=state["g_a0_prompt.down1.0.weight"].shape[0],
    )
    return config, prompts


def build_model(config: CodecConfig, prompts: PromptConfig | None = None) -> HyperpriorCodec:
    return TransTIC(config, prompts) if prompts is not None else TIC(config)


def weights_fingerprint(state: Mapping[str, Tensor]) -> bytes:
    """sha256 over sorted keys and float32 tensor bytes: identifies what a stream was coded with."""
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        if value.is_floating_point():
            value = value.float()
        digest.update(key.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.digest()


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """The file's contents (tensors and plain containers only: never unpickles code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign/corrupt files
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc})") from exc


def checkpoint_metadata(raw: Any) -> dict[str, Any]:
    """The ``metadata`` that :func:`save_checkpoint` stored beside the weights, if any."""
    metadata = raw.get("metadata") if isinstance(raw, Mapping) else None
    return dict(metadata) if isinstance(metadata, Mapping) else {}


def load_checkpoint(
    source: str | os.PathLike[str] | Mapping[str, Tensor],
    *,
    device: str | torch.device = "cpu",
) -> HyperpriorCodec:
    """Build the right model for ``source`` and return it in eval mode, ready to code.

    ``source`` is a path or an already loaded (possibly wrapped) state dict. Names of
    catalog weights and checksums are handled one level up, by
    :func:`transtic.weights.load_codec`.
    """
    raw: Any = source if isinstance(source, Mapping) else read_checkpoint(source)
    state = normalize_state_dict(raw)
    config, prompts = infer_architecture(state)
    model = build_model(config, prompts)
    has_tables = all(
        state.get(f"{module}.{name}") is not None and state[f"{module}.{name}"].numel() > 0
        for module in ("entropy_bottleneck", "gaussian_conditional")
        for name in ("_quantized_cdf", "_offset", "_cdf_length")
    )
    if not has_tables:
        # Training snapshots may lack CDF tables; they are rebuilt by update() below.
        state = {k: v for k, v in state.items() if k.rsplit(".", 1)[-1] not in CDF_BUFFERS}
    try:
        result = model.load_state_dict(state, strict=has_tables)
    except RuntimeError as exc:
        raise CheckpointError(f"state dict does not fit the inferred model: {exc}") from exc
    if not has_tables:
        unexpected = [k for k in result.missing_keys if k.rsplit(".", 1)[-1] not in CDF_BUFFERS]
        if unexpected or result.unexpected_keys:
            raise CheckpointError(
                f"state dict does not fit the inferred model: missing {unexpected}, "
                f"unexpected {result.unexpected_keys}"
            )
    model.eval()
    if not has_tables:
        model.update(force=True)
    fingerprint = weights_fingerprint(model.state_dict())
    object.__setattr__(model, "fingerprint", fingerprint)
    return model.to(device)


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` into a temporary file renamed into place: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def _compact(key: str, value: Tensor) -> Tensor:
    """Smallest exact dtype for the structural buffers (loading casts them back).

    Shift masks hold only 0 and -100 and index tables small integers; stored as
    float16/int64 they would be ~80% of a small model's file.
    """
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "attn_mask":
        small = value.to(torch.int8)
        if torch.equal(small.to(value.dtype), value):
            return small
    if leaf == "relative_position_index" and value.numel() and int(value.abs().max()) < 2**15:
        return value.to(torch.int16)
    return value


def save_checkpoint(
    model: HyperpriorCodec,
    path: str | os.PathLike[str],
    *,
    half: bool = False,
    cdf_tables: bool = True,
    compact: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``{"state_dict": ..., "metadata": ...}`` with the official key names.

    The one checkpoint writer (readable by the paper's code). ``half`` stores the
    parameters in float16; ``cdf_tables=False`` leaves out the entropy coder's tables,
    which :func:`load_checkpoint` then rebuilds from the (rounded) weights, so encoder and
    decoder always agree on them; ``compact`` stores structural buffers in the smallest
    exact dtype. Release weights use all three (``transtic.training.export_weights``).
    """
    # Only parameters are halved: float buffers such as the 1e-9 likelihood bound
    # would round to 0 in float16 and make likelihood-based rates infinite.
    params = {name for name, _ in model.named_parameters()}
    dropped = {
        f"{module}.{name}"
        for module in ("entropy_bottleneck", "gaussian_conditional")
        for name in CDF_BUFFERS
    }
    state: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        if not cdf_tables and key in dropped:
            value = torch.empty(0, dtype=value.dtype)
        elif half and legacy_to_modern_key(key) in params and value.is_floating_point():
            value = value.half()
        state[key] = _compact(key, value) if compact else value
    payload: dict[str, Any] = {"state_dict": state}
    if metadata is not None:
        payload["metadata"] = dict(metadata)
    return atomic_save(payload, path)
