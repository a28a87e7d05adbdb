"""What one batch goes through: (encode) -> decode -> task, with per-item isolation."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import Tensor

from services.analytics.hub import BackendSlot, CodecSlot
from services.analytics.metrics import Metrics
from services.analytics.schemas import AnalysisResult
from services.common.errors import ErrorCode, ServiceError
from transtic.codec import DecodeResult, ImageCodec
from transtic.tasks import TaskBackend

log = logging.getLogger(__name__)
V = TypeVar("V")


@dataclass
class Job:
    task: str
    codec: CodecSlot
    backend: BackendSlot
    api: str  # which API sent it (rest, grpc, stream, v2): the metrics' api label
    bitstream: bytes | None = None
    image: Tensor | None = None  # edge path: encode first, then analyse the real stream
    keep_image: bool = False
    request_id: str = ""  # already checked (services.common.request_ids)
    submitted: float = field(default_factory=time.perf_counter)
    # Raised when the caller gave up (timeout, disconnect): checked between stages.
    abandoned: threading.Event = field(default_factory=threading.Event)


@dataclass
class Outcome:
    result: AnalysisResult
    bitstream: bytes
    image: Tensor | None = None


def _groups(
    jobs: list[Job], errors: list[BaseException | None], key: Callable[[Job], str]
) -> list[list[int]]:
    """Indices of the still-healthy jobs, grouped by ``key`` (codec or task)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, job in enumerate(jobs):
        if errors[i] is None:
            groups[key(job)].append(i)
    return list(groups.values())


def _drop_abandoned(jobs: list[Job], errors: list[BaseException | None]) -> None:
    """Stop work on items whose caller is gone; the rest of the batch goes on."""
    for i, job in enumerate(jobs):
        if errors[i] is None and job.abandoned.is_set():
            errors[i] = ServiceError(ErrorCode.CANCELLED, "the caller gave up; work dropped")


def _isolated(run: Callable[[list[int]], Sequence[V]], indices: list[int]) -> list[V | Exception]:
    """Run a whole group at once; if that fails, rerun item by item so that only the
    bad items fail (a batch is an optimisation, never a shared fate)."""
    try:
        out = list(run(indices))
        if len(out) == len(indices):
            return list(out)
        raise RuntimeError(f"{len(indices)} inputs gave {len(out)} outputs")
    except Exception as exc:
        if len(indices) == 1:
            return [exc]
        log.info("batch of %d failed (%s); retrying item by item", len(indices), exc)
    results: list[V | Exception] = []
    for i in indices:
        try:
            (single,) = run([i])
            results.append(single)
        except Exception as exc:
            results.append(exc)
    return results


class Pipeline:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def process(self, jobs: list[Job]) -> list[Outcome | BaseException]:
        start = time.perf_counter()
        errors: list[BaseException | None] = [None] * len(jobs)
        timings = [{"queue": (start - job.submitted) * 1e3} for job in jobs]
        _drop_abandoned(jobs, errors)
        streams = self._encode(jobs, errors, timings)
        _drop_abandoned(jobs, errors)
        decoded = self._decode(jobs, streams, errors, timings)
        _drop_abandoned(jobs, errors)
        outputs = self._predict(jobs, decoded, errors, timings)
        results: list[Outcome | BaseException] = []
        for i, job in enumerate(jobs):
            err, dec, pred = errors[i], decoded[i], outputs[i]
            if err is not None or dec is None or pred is None:
                results.append(err or RuntimeError("item produced no result"))
                continue
            result = self._result(job, dec, pred, timings[i])
            results.append(Outcome(result, streams[i], dec.image if job.keep_image else None))
        return results

    @staticmethod
    def _encode(
        jobs: list[Job], errors: list[BaseException | None], timings: list[dict[str, float]]
    ) -> list[bytes]:
        streams: list[bytes] = []
        for i, job in enumerate(jobs):
            if job.image is None or errors[i] is not None:
                streams.append(job.bitstream or b"")
                continue
            try:
                encoded = job.codec.codec.encode(job.image)
            except Exception as exc:
                errors[i] = exc
                streams.append(b"")
                continue
            streams.append(encoded.data)
            timings[i].update({f"encode_{k}": v for k, v in encoded.timings.items()})
        return streams

    @staticmethod
    def _decode(
        jobs: list[Job],
        streams: list[bytes],
        errors: list[BaseException | None],
        timings: list[dict[str, float]],
    ) -> list[DecodeResult | None]:
        decoded: list[DecodeResult | None] = [None] * len(jobs)
        # By weights, not by name: two loaded versions of one model share its name.
        for indices in _groups(jobs, errors, lambda job: job.codec.fingerprint):
            codec = jobs[indices[0]].codec.codec

            def run(idx: list[int], codec: ImageCodec = codec) -> list[DecodeResult]:
                return codec.decode_batch([streams[i] for i in idx])

            for i, out in zip(indices, _isolated(run, indices), strict=True):
                if isinstance(out, BaseException):
                    errors[i] = out
                else:
                    decoded[i] = out
                    timings[i].update(out.timings)
        return decoded

    @staticmethod
    def _predict(
        jobs: list[Job],
        decoded: list[DecodeResult | None],
        errors: list[BaseException | None],
        timings: list[dict[str, float]],
    ) -> list[dict[str, Any] | None]:
        outputs: list[dict[str, Any] | None] = [None] * len(jobs)
        for indices in _groups(jobs, errors, lambda job: job.task):
            backend = jobs[indices[0]].backend.backend

            def run(idx: list[int], backend: TaskBackend = backend) -> list[dict[str, Any]]:
                return backend.predict([decoded[i].image for i in idx])  # type: ignore[union-attr]

            t0 = time.perf_counter()
            preds = _isolated(run, indices)
            # One forward pass served them all; each frame is charged its share.
            share = (time.perf_counter() - t0) * 1e3 / len(indices)
            for i, pred in zip(indices, preds, strict=True):
                if isinstance(pred, BaseException):
                    errors[i] = pred
                else:
                    outputs[i] = pred
                    timings[i]["task"] = share
        return outputs

    def _result(
        self, job: Job, dec: DecodeResult, pred: dict[str, Any], timings: dict[str, float]
    ) -> AnalysisResult:
        h, w = dec.header.original_size
        result = AnalysisResult.from_task_output(
            pred,
            task=job.task,
            bits_per_pixel=dec.bpp,
            num_bytes=dec.num_bytes,
            width=w,
            height=h,
            quality=dec.header.quality,
            codec_id=job.codec.id,
            codec_fingerprint=job.codec.fingerprint,
            task_model_id=job.backend.model_id,
            request_id=job.request_id,
            timings_ms={k: round(v, 3) for k, v in timings.items()},
        )
        m = self.metrics
        model = {"codec": job.codec.id, "quality": str(job.codec.quality), "task": job.task}
        m.frames.labels(api=job.api, **model).inc()
        m.bytes.labels(**model).inc(dec.num_bytes)
        m.bpp.labels(**model).observe(dec.bpp)
        m.observe_stages(timings)
        return result
