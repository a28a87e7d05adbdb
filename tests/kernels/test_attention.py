"""The native window-attention kernel against the reference softmax attention."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from transtic.kernels import KernelBuildError, build
from transtic.kernels.attention import available, padded_queries, window_attention

pytestmark = pytest.mark.skipif(not available(), reason="no C++ compiler to build the kernel")


def reference(qkv, tokens, heads, prompts, num_prompts, prompt_div, bias, mask):
    """softmax(q k^T * scale + bias + mask) v per window, prompts first among the keys."""
    rows, c3 = qkv.shape
    c = c3 // 3
    d = c // heads
    windows = rows // tokens
    x = qkv.view(windows, tokens, 3, heads, d)
    q, k, v = (x[:, :, i].transpose(1, 2) for i in range(3))
    if num_prompts:
        kv = prompts.view(-1, num_prompts, 2, heads, d)
        block = torch.arange(windows) // prompt_div
        k = torch.cat([kv[block, :, 0].transpose(1, 2), k], 2)
        v = torch.cat([kv[block, :, 1].transpose(1, 2), v], 2)
    logits = (q * d**-0.5) @ k.transpose(-1, -2) + bias
    if mask is not None:
        logits = logits + mask
    return (logits.softmax(-1) @ v).transpose(1, 2).reshape(rows, c)


def key_major(t: torch.Tensor, tokens: int) -> torch.Tensor:
    """(..., T, S) -> (..., S, padded T), the kernel's layout."""
    out = t.transpose(-1, -2)
    return torch.nn.functional.pad(out, (0, padded_queries(tokens) - tokens)).contiguous()


CASES = [
    # windows, tokens, heads, head width, prompts, prompt_div (windows per prompt block)
    pytest.param(24, 64, 8, 16, 16, 12, id="shared-prompts"),
    pytest.param(10, 64, 8, 16, 16, 1, id="instance-prompts"),
    pytest.param(12, 64, 16, 12, 0, 1, id="no-prompts-width12"),
    pytest.param(7, 9, 2, 32, 5, 7, id="odd-window"),
    pytest.param(6, 16, 4, 20, 0, 1, id="width20"),
]


@pytest.mark.parametrize(("windows", "tokens", "heads", "width", "prompts", "div"), CASES)
def test_matches_reference_attention_with_masks(windows, tokens, heads, width, prompts, div):
    gen = torch.Generator().manual_seed(windows * tokens)
    c = heads * width
    keys = prompts + tokens
    qkv = torch.randn(windows * tokens, 3 * c, generator=gen)
    kv = torch.randn(-(-windows // div) * prompts, 2 * c, generator=gen) if prompts else None
    bias = torch.randn(heads, tokens, keys, generator=gen)
    bias[:, :, :prompts] = 0
    per_image = windows // 2 if windows % 2 == 0 else windows
    slots = torch.full((per_image,), -1, dtype=torch.int32)
    slots[-2:] = torch.tensor([0, 1], dtype=torch.int32)
    masks = torch.where(torch.rand(2, tokens, keys, generator=gen) < 0.3, -100.0, 0.0)
    full_mask = torch.zeros(windows, 1, tokens, keys)
    for w in range(windows):
        if slots[w % per_image] >= 0:
            full_mask[w, 0] = masks[slots[w % per_image]]
    out = window_attention(
        qkv,
        tokens_per_window=tokens,
        heads=heads,
        scale=width**-0.5,
        bias=key_major(bias, tokens),
        prompts=kv,
        num_prompts=prompts,
        prompt_div=div,
        masks=key_major(masks, tokens),
        mask_slot=slots,
    )
    expected = reference(qkv, tokens, heads, kv, prompts, div, bias, full_mask)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_result_does_not_depend_on_the_thread_count():
    gen = torch.Generator().manual_seed(3)
    qkv = torch.randn(33 * 64, 3 * 64, generator=gen)
    bias = key_major(torch.randn(4, 64, 64, generator=gen), 64)
    outs = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            outs.append(window_attention(qkv, tokens_per_window=64, heads=4, scale=0.25, bias=bias))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_bad_layouts_are_refused():
    qkv = torch.randn(64, 96)
    bias = key_major(torch.zeros(2, 64, 64), 64)
    with pytest.raises(ValueError, match="whole windows"):
        window_attention(qkv[:60], tokens_per_window=64, heads=2, scale=1.0, bias=bias)
    with pytest.raises(ValueError, match="bias"):
        window_attention(qkv, tokens_per_window=64, heads=2, scale=1.0, bias=bias[:, :8])
    with pytest.raises(ValueError, match="float32"):
        window_attention(qkv.double(), tokens_per_window=64, heads=2, scale=1.0, bias=bias)
    with pytest.raises(ValueError, match="mask"):
        window_attention(
            qkv, tokens_per_window=64, heads=2, scale=1.0, bias=bias, masks=bias[:1].clone()
        )


def test_a_built_kernel_is_reused_not_rebuilt(fresh_build, monkeypatch):
    first = build.build("window_attention")
    assert first.parent == fresh_build and first.is_file()
    calls = []
    real_run = build.subprocess.run

    def counting_run(cmd, *args, **kwargs):
        calls.append(cmd)
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(build.subprocess, "run", counting_run)
    assert build.build("window_attention") == first
    assert calls == []


def test_without_a_compiler_nothing_is_built_and_codecs_keep_sdpa(fresh_build, monkeypatch):
    from transtic.codec import ImageCodec
    from transtic.layers import WindowAttention
    from transtic.models import create_model

    monkeypatch.setattr(build, "compiler", lambda: None)
    with pytest.raises(KernelBuildError, match="no C\\+\\+ compiler"):
        build.build("window_attention")
    assert not available()
    torch.manual_seed(0)
    model = create_model("transtic-tiny").eval()
    model.update(force=True)
    codec = ImageCodec(model, precision="float32")
    impls = {m.impl for n, m in codec._transforms.named_modules() if isinstance(m, WindowAttention)}
    assert "native" not in impls
    image = torch.randint(0, 256, (3, 256, 256), dtype=torch.uint8)
    assert codec.decode(codec.encode(image).data).image.shape[-2:] == (256, 256)


def test_a_cache_directory_others_can_write_is_not_used(fresh_build):
    fresh_build.mkdir(parents=True)
    planted = fresh_build / build.library_name("window_attention", build.cpu_capability())
    planted.write_bytes(b"not a library")
    os.chmod(fresh_build, stat.S_IRWXU | stat.S_IWGRP | stat.S_IRGRP | stat.S_IXGRP)
    with pytest.raises(KernelBuildError, match="no private, writable directory"):
        build.build("window_attention")


def test_prebuilt_kernels_load_without_a_compiler(fresh_build, monkeypatch):
    from transtic.kernels.__main__ import main

    assert main(["build", "--cache-dir", str(fresh_build), "--isa", "AVX2", "DEFAULT"]) == 0
    assert main(["build", "--cache-dir", str(fresh_build)]) == 0
    names = sorted(p.name.split("-")[1] for p in fresh_build.glob("*.so"))
    assert set(names) >= {"avx2", "default"}
    monkeypatch.setattr(build, "compiler", lambda: None)
    build.forget_loaded()
    assert available()  # this CPU's library is found in the cache, nothing compiled


def test_bfloat16_rows_are_read_and_written_in_place():
    """bf16 tokens: float32 arithmetic on the widened values, output rounded once to bf16."""
    gen = torch.Generator().manual_seed(5)
    heads, width, tokens, prompts = 8, 16, 64, 16
    c = heads * width
    qkv = torch.randn(6 * tokens, 3 * c, generator=gen).bfloat16()
    kv = torch.randn(6 * prompts, 2 * c, generator=gen).bfloat16()
    bias = torch.randn(heads, tokens, prompts + tokens, generator=gen)
    bias[:, :, :prompts] = 0
    out = window_attention(
        qkv,
        tokens_per_window=tokens,
        heads=heads,
        scale=width**-0.5,
        bias=key_major(bias, tokens),
        prompts=kv,
        num_prompts=prompts,
    )
    assert out.dtype == torch.bfloat16
    expected = reference(qkv.float(), tokens, heads, kv.float(), prompts, 1, bias, None)
    torch.testing.assert_close(out, expected.bfloat16(), rtol=0, atol=0.01)
    with pytest.raises(ValueError, match="dtype of qkv"):
        window_attention(
            qkv,
            tokens_per_window=tokens,
            heads=heads,
            scale=1.0,
            bias=key_major(bias, tokens),
            prompts=kv.float(),
            num_prompts=prompts,
        )


def test_openmp_only_beside_the_gnu_runtime_torch_runs_on(monkeypatch, tmp_path):
    """-fopenmp joins a loaded libgomp.so.1; beside any other runtime the kernel keeps its
    own threads (two OpenMP runtimes would each spin on the same cores)."""
    maps = tmp_path / "maps"
    monkeypatch.setattr(build, "Path", lambda p: maps if p == "/proc/self/maps" else build.Path(p))
    real_info = torch.__config__.parallel_info
    gomp = "7f00-7f10 r-xp 0 08:01 1 /venv/torch/lib/libgomp.so.1\n"
    renamed = "7f00-7f10 r-xp 0 08:01 1 /venv/torch.libs/libgomp-a34b3233.so.1.0.0\n"
    monkeypatch.setattr(torch.__config__, "parallel_info", lambda: "ATen parallel backend: OpenMP")
    maps.write_text(gomp)
    assert build.openmp_flags() == ("-fopenmp",)
    maps.write_text(renamed)
    assert build.openmp_flags() == ()
    monkeypatch.setattr(torch.__config__, "parallel_info", lambda: "parallel backend: native")
    maps.write_text(gomp)
    assert build.openmp_flags() == ()
    monkeypatch.setattr(torch.__config__, "parallel_info", real_info)


def test_a_kernel_without_openmp_runs_its_windows_on_threads_of_its_own(fresh_build, monkeypatch):
    gen = torch.Generator().manual_seed(7)
    qkv = torch.randn(21 * 64, 3 * 64, generator=gen)
    bias = key_major(torch.randn(4, 64, 64, generator=gen), 64)
    args = {"tokens_per_window": 64, "heads": 4, "scale": 0.25, "bias": bias}
    with_openmp = window_attention(qkv, **args)
    monkeypatch.setattr(build, "openmp_flags", lambda: ())
    build.forget_loaded()
    from transtic.kernels.attention import _library

    loaded = _library()
    assert loaded is not None and not loaded[1].openmp
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert torch.equal(window_attention(qkv, **args), with_openmp)
    finally:
        torch.set_num_threads(threads)


def test_a_compiler_without_openmp_still_builds_the_kernel(fresh_build, monkeypatch):
    """An OpenMP flag the compiler rejects (clang without libomp, say) costs the OpenMP
    build only: the kernel is built without it and runs on threads of its own."""
    plain = build._flag_choices(build.cpu_capability())[-1]
    monkeypatch.setattr(build, "openmp_flags", lambda: ("-fno-such-openmp-flag",))
    built = build.build("window_attention")
    assert built.name == build.library_name("window_attention", build.cpu_capability(), plain)
    from transtic.kernels.attention import _library

    loaded = _library()
    assert loaded is not None and not loaded[1].openmp
    gen = torch.Generator().manual_seed(11)
    qkv = torch.randn(5 * 16, 3 * 32, generator=gen)
    bias = torch.randn(2, 16, 16, generator=gen)
    out = window_attention(
        qkv, tokens_per_window=16, heads=2, scale=16**-0.5, bias=key_major(bias, 16)
    )
    expected = reference(qkv, 16, 2, None, 0, 1, bias, None)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert build.build("window_attention") == built  # found in the cache, nothing rebuilt
