"""glibc keeps freed tensor memory for reuse once the codec asks it to."""

from __future__ import annotations

import platform
import resource

import pytest
import torch

import transtic.codec
from transtic.allocator import retain_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _page_faults_of_a_new_tensor(mib: int) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(mib * 2**18)  # writes every page
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del block
    return faults


@pytest.mark.skipif(not GLIBC, reason="the setting exists in glibc only")
def test_freed_blocks_are_reused_without_new_page_faults():
    assert retain_freed_memory() is True
    assert retain_freed_memory() is True  # idempotent
    _page_faults_of_a_new_tensor(64)  # the heap grows once
    # 48 MiB is 12288 pages: a fresh mmap would fault in every one of them
    assert _page_faults_of_a_new_tensor(48) < 1000


def test_codec_tunes_the_allocator_only_when_asked(tiny_tic, monkeypatch):
    calls = []
    monkeypatch.setattr(transtic.codec, "retain_freed_memory", lambda: calls.append(1))
    transtic.codec.ImageCodec(tiny_tic, precision="float32", retain_memory=False)
    assert calls == []
    transtic.codec.ImageCodec(tiny_tic, precision="float32")
    assert calls == [1]


WORKER_THREAD_FAULTS = """
import resource, sys
from concurrent.futures import ThreadPoolExecutor
import numpy as np
from PIL import Image
from transtic import allocator
from transtic.codec import ImageCodec
from pathlib import Path
import transtic
if sys.argv[1] == "without-cap":
    allocator.M_ARENA_MAX = allocator.M_MMAP_MAX  # the same setting twice: no arena cap
weights = Path(transtic.__file__).parent / "weights/data/transtic_small_cls_q1.pth.tar"
codec = ImageCodec.from_checkpoint(str(weights), task="classification")
frame = Image.fromarray(np.random.default_rng(0).integers(0, 256, (480, 640, 3), np.uint8))
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    codec.encode(frame)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
with ThreadPoolExecutor(2) as pool:  # like a service: frames coded in worker threads
    print(min(pool.submit(faults).result() for _ in range(4)))
"""


@pytest.mark.slow
@pytest.mark.skipif(not GLIBC, reason="the setting exists in glibc only")
def test_frames_coded_in_worker_threads_reuse_freed_memory():
    """A thread's own glibc arena maps and unmaps the codec's large tensors every frame
    (~49k page faults per 640x480 frame with the default codec); with every thread on
    the retained main heap, a warm frame faults in (almost) nothing."""
    import subprocess
    import sys

    def run(mode: str) -> int:
        done = subprocess.run(
            [sys.executable, "-c", WORKER_THREAD_FAULTS, mode],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return int(done.stdout.split()[-1])

    assert run("with-cap") < 2000
    assert run("without-cap") > 10_000  # the check can tell the two apart
