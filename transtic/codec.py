"""High-level image codec: any image in, a self-describing bitstream out, and back."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .alignment import align, aligned_size, restore
from .allocator import retain_freed_memory
from .bitstream import (
    AlignMode,
    BitstreamError,
    EntropyParamMode,
    StreamHeader,
    decode_container,
    encode_container,
)
from .entropy.isolated import isolate_entropy_decoding
from .images import (
    DEFAULT_MAX_ASPECT_RATIO,
    DEFAULT_MAX_PIXELS,
    ImageError,
    check_size_budget,
    to_tensor,
)
from .models import HyperpriorCodec, TransTIC
from .precision import Precision, log_choice, resolve_precision

_ENTROPY_MODES = {EntropyParamMode.FLOAT: "float", EntropyParamMode.FIXED_POINT: "fixed"}


@dataclass
class EncodeResult:
    data: bytes
    header: StreamHeader
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def bpp(self) -> float:
        """Bits per pixel of the original image, from the real bytes (header included)."""
        h, w = self.header.original_size
        return len(self.data) * 8 / (h * w)


@dataclass
class DecodeResult:
    image: Tensor  # (3, H, W) float32 in [0, 1], original size
    header: StreamHeader
    num_bytes: int
    timings: dict[str, float] = field(default_factory=dict)
    y_hat: Tensor | None = None

    @property
    def bpp(self) -> float:
        h, w = self.header.original_size
        return self.num_bytes * 8 / (h * w)


class WeightsMismatchError(BitstreamError):
    """The stream was coded with other weights than this decoder holds."""


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[stage] = timings.get(stage, 0.0) + (time.perf_counter() - start) * 1e3


class ImageCodec:
    """Wraps a loaded model with alignment, precision and the container format.

    ``entropy_mode="fixed"`` (default) makes streams decodable on any machine;
    ``"float"`` reproduces the paper's computation (and its streams) exactly.
    ``precision="auto"`` (default) runs the analysis and synthesis transforms in bf16
    where the hardware has native bf16 (faster, at a small measured rate cost) and in
    float32 elsewhere; ``"int8"`` quantises their Linear layers (CPU, lossy; ``auto``
    picks it only with ``allow_int8=True``). The entropy parameters stay exact in every
    mode, so any decoder parses any encoder's streams. See ``transtic.precision``.
    ``retain_memory=True`` (default) makes glibc keep freed memory for the next frame
    (process-wide; see ``transtic.allocator``).
    """

    def __init__(
        self,
        model: HyperpriorCodec,
        *,
        quality: int = 0,
        task: str | None = None,
        align_mode: AlignMode = AlignMode.PAD,
        entropy_mode: EntropyParamMode = EntropyParamMode.FIXED_POINT,
        precision: Precision | str = "auto",
        allow_int8: bool = False,
        device: str | torch.device = "cpu",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO,
        isolate_decoding: bool = True,
        retain_memory: bool = True,
    ) -> None:
        if retain_memory:
            # Frames reuse the freed memory of the last one instead of faulting in fresh
            # pages for every operator (see transtic.allocator; process-wide).
            retain_freed_memory()
        self.device = torch.device(device)
        self.precision_choice = resolve_precision(precision, self.device, allow_int8=allow_int8)
        self.model = model.to(self.device).eval()
        self.quality = quality
        self.task = task or ("machine" if isinstance(model, TransTIC) else "human")
        self.align_mode = AlignMode(align_mode)
        self.entropy_mode = EntropyParamMode(entropy_mode)
        self.precision = self.precision_choice.precision
        log_choice(self.precision_choice, f"codec {type(model).__name__} on {self.device}")
        # A private copy with fast transforms (channels-last, BN folded, no per-op casts);
        # the model itself stays as loaded, for the reference computation.
        self._transforms = model.fast_transforms(self.precision)
        self.max_pixels = max_pixels  # of the coded (aligned) image: what the work costs
        self.max_aspect_ratio = max_aspect_ratio
        self.divisor = model.config.alignment
        if isolate_decoding:
            # untrusted streams reach a C++ range decoder that trusts its input
            isolate_entropy_decoding(self.model)
        fingerprint = getattr(model, "fingerprint", None)
        if fingerprint is None:
            from .models import weights_fingerprint

            fingerprint = weights_fingerprint(model.state_dict())
            object.__setattr__(model, "fingerprint", fingerprint)
        self.fingerprint: bytes = fingerprint[:16]
        self.codec_name = "transtic" if isinstance(model, TransTIC) else "tic"

    @classmethod
    def from_checkpoint(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        verify: bool = True,
        sha256: str | None = None,
        **kwargs: Any,
    ) -> ImageCodec:
        """A codec from a checkpoint file or a catalog name, checked and loaded by
        :func:`transtic.weights.load_codec`; ``kwargs`` go to the constructor."""
        from .weights import load_codec

        device = kwargs.get("device", "cpu")
        loaded = load_codec(
            name_or_path, cache_dir=cache_dir, device=device, verify=verify, sha256=sha256
        )
        return cls(loaded.model, **kwargs)

    # -- encode ---------------------------------------------------------------------
    def encode(self, image: Any) -> EncodeResult:
        """Image (PIL, HxWx3 uint8 array, or (3,H,W) tensor) -> container bytes."""
        timings: dict[str, float] = {}
        x = to_tensor(image)
        h, w = x.shape[-2:]
        self.check_size(int(h), int(w))
        x = align(x[None].to(self.device), self.divisor, self.align_mode)
        mode = _ENTROPY_MODES[self.entropy_mode]
        with torch.no_grad():
            with _timed(timings, "analysis"):
                x = x.contiguous(memory_format=torch.channels_last)
                y, z = self._transforms.analyze(x)
            with _timed(timings, "entropy_encode"):
                y_strings, z_strings, _ = self.model.entropy_encode(y, z, mode)  # type: ignore[arg-type]
        header = StreamHeader(
            codec=self.codec_name,
            weights_fingerprint=self.fingerprint,
            quality=self.quality,
            task=self.task,
            original_size=(int(h), int(w)),
            coded_size=(int(x.shape[-2]), int(x.shape[-1])),
            align_mode=self.align_mode,
            entropy_mode=self.entropy_mode,
            y_shape=tuple(int(v) for v in y.shape[1:]),  # type: ignore[arg-type]
            z_shape=tuple(int(v) for v in z.shape[1:]),  # type: ignore[arg-type]
        )
        with _timed(timings, "pack"):
            data = encode_container(header, y_strings[0], z_strings[0])
        return EncodeResult(data, header, timings)

    def check_size(self, height: int, width: int) -> None:
        """Raise ImageError when an image of this size is over this codec's budget."""
        check_size_budget(
            height,
            width,
            max_pixels=self.max_pixels,
            max_aspect_ratio=self.max_aspect_ratio,
            alignment=self.divisor,
        )

    # -- decode ---------------------------------------------------------------------
    def parse(self, data: bytes) -> tuple[StreamHeader, bytes, bytes]:
        """Validate a stream against this decoder; raises BitstreamError subclasses."""
        container = decode_container(data, max_pixels=self.max_pixels)
        header = container.header
        if header.weights_fingerprint != self.fingerprint:
            raise WeightsMismatchError(
                f"bitstream: coded with weights {header.weights_fingerprint.hex()} "
                f"but this decoder holds {self.fingerprint.hex()}"
            )
        expected = aligned_size(header.coded_size, self.divisor)
        if expected != header.coded_size:
            raise BitstreamError(
                f"bitstream: coded size {header.coded_size} is not a multiple of {self.divisor}"
            )
        try:
            # The header's claims are checked before any decoding work is spent on them.
            self.check_size(*header.original_size)
        except ImageError as exc:
            raise BitstreamError(f"bitstream: {exc}") from None
        n_ch = self.model.config.M
        if header.y_shape[0] != n_ch or header.z_shape[0] != self.model.config.N:
            raise BitstreamError("bitstream: latent channel counts do not match this codec")
        return header, container.y_string, container.z_string

    def decode(self, data: bytes, *, keep_latent: bool = False) -> DecodeResult:
        return self.decode_batch([data], keep_latent=keep_latent)[0]

    def decode_batch(
        self, streams: Sequence[bytes], *, keep_latent: bool = False
    ) -> list[DecodeResult]:
        """Decode several streams; those with equal coded size share one synthesis pass."""
        results: list[DecodeResult | None] = [None] * len(streams)
        latents: dict[
            tuple[int, int], list[tuple[int, StreamHeader, Tensor, dict[str, float]]]
        ] = {}
        for i, data in enumerate(streams):
            timings: dict[str, float] = {}
            with _timed(timings, "parse"):
                header, y_string, z_string = self.parse(data)
            with _timed(timings, "entropy_decode"):
                y_hat = self.model.entropy_decode(
                    [y_string],
                    [z_string],
                    header.z_shape[1:],
                    _ENTROPY_MODES[header.entropy_mode],  # type: ignore[arg-type]
                )
            if tuple(y_hat.shape[1:]) != header.y_shape:
                raise BitstreamError("bitstream: latent shape does not match the header")
            latents.setdefault(header.coded_size, []).append((i, header, y_hat, timings))
        for group in latents.values():
            start = time.perf_counter()
            batch = torch.cat([item[2] for item in group]).to(self.device)
            with torch.no_grad():
                x_hat = self._transforms.synthesize(batch)
            share = (time.perf_counter() - start) * 1e3 / len(group)
            for k, (i, header, y_hat, timings) in enumerate(group):
                timings["synthesis"] = share
                image = restore(x_hat[k : k + 1], header.original_size, header.align_mode)[0]
                results[i] = DecodeResult(
                    image.cpu(), header, len(streams[i]), timings, y_hat if keep_latent else None
                )
        return [r for r in results if r is not None]
