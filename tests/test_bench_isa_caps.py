"""scripts/bench_codec.py --max-isa: the caps reach every timed process and take effect.

The child processes are real (spawned, torch loaded under the caps); nothing is timed
against a bound. What a capped process reports is checked only on x86 CPUs with AVX2,
where the caps mean something.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import pytest
import torch

from transtic.precision import cpu_flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import isa_caps  # noqa: E402
from codec_process import CodecProcess, OurRunner  # noqa: E402

X86_AVX2 = platform.machine() in ("x86_64", "AMD64") and "avx2" in cpu_flags()
needs_x86 = pytest.mark.skipif(not X86_AVX2, reason="the AVX2 caps need an x86 CPU with AVX2")
AVX2_CAPS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
}


def test_capped_environment_caps_every_library_and_keeps_the_rest():
    base = {"PATH": "/bin", "OMP_NUM_THREADS": "2"}
    env = isa_caps.capped_environment("avx2", base)
    assert env == base | AVX2_CAPS
    assert base == {"PATH": "/bin", "OMP_NUM_THREADS": "2"}  # not modified


def test_native_run_drops_caps_inherited_from_the_caller():
    base = {"PATH": "/bin", **AVX2_CAPS}
    assert isa_caps.capped_environment("native", base) == {"PATH": "/bin"}
    assert isa_caps.cap_variables(None) == {} == isa_caps.cap_variables("native")


def test_unknown_isa_is_an_error():
    with pytest.raises(ValueError, match="max_isa"):
        isa_caps.cap_variables("avx9")


def test_process_environment_is_restored(monkeypatch):
    monkeypatch.setenv("TRANSTIC_PROBE_MARK", "kept")
    before = dict(os.environ)
    with isa_caps.process_environment({"ONLY": "this"}):
        assert dict(os.environ) == {"ONLY": "this"}
    assert dict(os.environ) == before
    with pytest.raises(RuntimeError), isa_caps.process_environment({}):
        raise RuntimeError("a failed start restores it too")
    assert dict(os.environ) == before


def test_onednn_verbose_lines_are_parsed():
    verbose = "\n".join(
        [
            "onednn_verbose,v1,info,oneDNN v3.12.0 (commit 80afa71)",
            "onednn_verbose,v1,info,cpu,isa:Intel AVX2",
            "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:blk,undef,src:f32",
            "onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,forward_training,src",
            "onednn_verbose,v1,primitive,exec,cpu,convolution,gemm:jit,forward_training,src",
        ]
    )
    assert isa_caps._onednn_fields(verbose) == {
        "onednn_isa": "Intel AVX2",
        "onednn_conv_impl": "jit:avx2",
    }


@needs_x86
def test_a_capped_process_runs_avx2_kernels_and_auto_picks_float32():
    seen = isa_caps.probe("avx2")
    assert seen["caps"] == AVX2_CAPS
    assert seen["aten_capability"] == "AVX2"
    assert not seen["onednn_bf16"]
    assert seen["onednn_isa"] == "Intel AVX2"
    assert seen["onednn_conv_impl"].endswith("avx2")
    assert seen["auto_precision"] == "float32"
    assert seen["auto_precision_lossy_allowed"] == "float32"


def test_a_native_process_carries_no_caps(monkeypatch):
    for name, value in AVX2_CAPS.items():
        monkeypatch.setenv(name, value)  # as if the caller ran capped: native drops them
    seen = isa_caps.probe("native")
    assert seen["caps"] == {}
    assert seen["aten_capability"] == torch.backends.cpu.get_cpu_capability()


@needs_x86
def test_our_codec_in_a_capped_child_process(tiny_transtic):
    """The benchmark's path for ours under --max-isa avx2: the child reports its capped
    libraries and the precision auto resolved to there, and codes the image."""
    image = (torch.rand(3, 64, 96) * 255).to(torch.uint8)
    env = isa_caps.capped_environment("avx2", os.environ)
    child = CodecProcess(OurRunner, (tiny_transtic.state_dict(), "auto"), image, threads=1, env=env)
    try:
        assert child.report["aten_capability"] == "AVX2"
        assert child.report["precision"] == "float32"
        assert child.report["caps"] == AVX2_CAPS
        encode, decode, size, decoded = child.run_once()
    finally:
        child.close()
    assert size > 0 and decoded.shape == (3, 64, 96)
    assert all(s >= 0 for s in (*encode, *decode))


def test_a_path_that_cannot_be_built_is_reported_by_its_process(tiny_transtic):
    image = torch.zeros(3, 64, 64, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="coding process: .*precision"):
        CodecProcess(OurRunner, (tiny_transtic.state_dict(), "int4"), image, threads=1)


def test_summary_reports_failed_paths_and_rates_the_others_against_the_first_timed():
    from bench_codec import CodingPath, summarise

    image = torch.full((3, 100, 100), 128, dtype=torch.uint8)
    decoded = image.float() / 255

    def timed(name: str, seconds: float) -> CodingPath:
        path = CodingPath(name, lambda: ((seconds, 2 * seconds), (seconds, seconds), 10, decoded))
        path.run_once()
        return path

    failed = CodingPath("ours bfloat16", lambda: (_ for _ in ()).throw(RuntimeError("no bf16")))
    assert not failed.try_once()
    rows = summarise([timed("official", 4.0), failed, timed("ours", 1.0)], image)
    assert rows[1] == {"path": "ours bfloat16", "error": "no bf16", "process": {}}
    assert rows[0]["encode_x"] == 1.0
    assert rows[2]["encode_x"] == pytest.approx(4.0)
    assert rows[2]["encode_cpu_x"] == pytest.approx(4.0)
    assert rows[2]["bpp"] == pytest.approx(10 * 8 / 10_000)


def test_summary_rates_each_round_against_the_same_round_of_the_baseline():
    """A machine that slows down between rounds moves both sides of a round's ratio."""
    from bench_codec import CodingPath, print_table, summarise

    image = torch.full((3, 100, 100), 128, dtype=torch.uint8)
    decoded = image.float() / 255

    def rounds(name: str, seconds: list[float]) -> CodingPath:
        times = iter(seconds)

        def run():  # type: ignore[no-untyped-def]
            s = next(times)
            return (s, s), (s / 2, s / 2), 10, decoded

        path = CodingPath(name, run)
        for _ in seconds:
            path.run_once()
        return path

    # round 2 runs on a machine twice as slow: 3x in every round, whatever the medians say
    rows = summarise([rounds("official", [3.0, 6.0, 3.3]), rounds("ours", [1.0, 2.0, 1.1])], image)
    assert rows[1]["encode_x_per_round"] == pytest.approx([3.0, 3.0, 3.0])
    assert rows[1]["decode_x_per_round"] == pytest.approx([3.0, 3.0, 3.0])
    assert rows[0]["encode_x_per_round"] == pytest.approx([1.0, 1.0, 1.0])
    print_table(rows, "vs official")
