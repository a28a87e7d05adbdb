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
