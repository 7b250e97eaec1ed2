"""Memory preflight: weights by dtype exactly as stored, activations from a fake-tensor run, the estimate
against measured peak RSS of real sampler steps on the CPU, ``block_swap = auto``, and one-line refusals."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from infinitetalk.build import ModelOptions, build_dit
from infinitetalk.config import DiTConfig
from infinitetalk.errors import InputError
from infinitetalk.pipeline import GenerationConfig
from infinitetalk.preflight import (
    RunShape,
    _LiveBytes,
    check_fits,
    estimate,
    guide_table,
    pixel_bytes,
    weight_bytes,
)
from infinitetalk.quant import weight_bytes as stored_bytes
from infinitetalk.tiny.dit import TINY_DIT

ROOT = Path(__file__).resolve().parents[2]
MERGED = "models/diffusion_models/wan2.1_i2v_480p_14B_infinitetalk_single_merged_fp16.safetensors"


@pytest.mark.parametrize("quantization", ["none", "fp8_e4m3fn", "quanto_int8", "quanto_fp8"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_weight_bytes_are_what_the_loader_stores(tiny_dit_root, quantization, precision):
    model = build_dit(SimpleNamespace(dit=tiny_dit_root / MERGED, adapter=None),
                      ModelOptions(precision=precision, quantization=quantization))  # fmt: skip
    non_block, per_block = weight_bytes(TINY_DIT, model.compute_dtype, quantization)
    assert non_block + per_block * TINY_DIT.num_layers == stored_bytes(model)
    assert per_block == stored_bytes(model.blocks[0])


def test_live_bytes_counts_storages_not_views():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(1000, 1000)  # 4 MB, existing: not counted
        tracker = _LiveBytes(existing=[x])
        with tracker:
            a = x * 2  # +4 MB
            b = a.view(-1)  # a view: nothing new
            c = a + 1  # +4 MB -> peak 8 MB
            del a, b
            d = c.half()  # +2 MB while c (4 MB) lives -> 6 MB
            del c, d
    assert tracker.peak == 8_000_000 and tracker.current == 0


def test_run_shape_of_a_generation():
    three = GenerationConfig(text_scale=5.0, batch_guidance=True)
    assert RunShape.for_generation(three, 480, 832, 1).batch == 3  # cond, drop_text, uncond in one call
    assert RunShape.for_generation(three, 480, 832, 2).batch == 2  # uncond has one speaker: its own call
    assert (
        RunShape.for_generation(GenerationConfig(text_scale=1.0, batch_guidance=True), 480, 832, 1).batch == 2
    )
    assert RunShape.for_generation(GenerationConfig(), 480, 832, 1).batch == 1
    assert RunShape(480, 832, 81).latent == (21, 60, 104)


def test_estimate_of_the_14b_model():
    """Weights from the real key layout (16.4 B base + 2.5 B adapter parameters), activations grow with the
    batch of guidance passes and with the window's tokens; block swap moves whole blocks to RAM."""
    cfg, bf16 = DiTConfig(), torch.bfloat16
    one = estimate(cfg, bf16, "none", RunShape(480, 832, 81, batch=1))
    three = estimate(cfg, bf16, "none", RunShape(480, 832, 81, batch=3))
    big = estimate(cfg, bf16, "none", RunShape(720, 1280, 81, batch=1))
    assert 35.0 < one.weights_resident / 2**30 < 35.6  # 18.9 B parameters in bf16 (+ fp32 modules)
    assert 2.5 * one.activations < three.activations < 3.1 * one.activations
    assert big.activations > 2 * one.activations
    fp8 = estimate(cfg, bf16, "fp8_e4m3fn", RunShape(480, 832, 81), block_swap=20)
    non_block, per_block = weight_bytes(cfg, bf16, "fp8_e4m3fn")
    assert fp8.weights_swapped == 20 * per_block and fp8.swap_in_flight == 2 * per_block
    assert fp8.weights_resident == non_block + 20 * per_block
    assert one.pixels == pixel_bytes(RunShape(480, 832, 81)) < one.sampling  # the DiT call is the peak


def test_refusal_names_the_smallest_change_that_fits():
    """Block swap first (quality unchanged), then batched guidance off, fp8 storage, shorter windows."""
    cfg, bf16 = DiTConfig(), torch.bfloat16
    one, three = RunShape(480, 832, 81), RunShape(480, 832, 81, batch=3)
    need = {n: estimate(cfg, bf16, "none", one, n).budget() for n in (0, 12, 40)}
    with pytest.raises(InputError, match=r"block_swap 0\) but .* is free: set block_swap to 12 \(or auto\)"):
        check_fits(cfg, bf16, "none", one, 0, need[12])
    assert check_fits(cfg, bf16, "none", one, 12, need[12]).block_swap == 12
    all_swapped = estimate(cfg, bf16, "none", three, 40).budget()
    with pytest.raises(InputError, match=r"is free: turn batched guidance off with block_swap \d+"):
        check_fits(cfg, bf16, "none", three, 0, all_swapped - 1)
    with pytest.raises(InputError, match=r"is free: use quantization fp8_e4m3fn with block_swap \d+"):
        check_fits(cfg, bf16, "none", one, 0, need[40] - 1)
    with pytest.raises(InputError, match=r"is free: lower frame_num to 49"):
        check_fits(cfg, bf16, "fp8_e4m3fn", one, 0, estimate(cfg, bf16, "fp8_e4m3fn", one, 40).budget() - 1)
    assert check_fits(cfg, bf16, "none", one, 0, None).block_swap == 0  # free memory unknown: no check


def test_cpu_runs_are_checked_against_ram(tiny_dit_root, monkeypatch):
    """On the CPU the whole run is in RAM; the refusal comes before any weight is read."""
    from infinitetalk.build import plan_dit
    from infinitetalk.loading import dit as dit_loading

    read = []
    monkeypatch.setattr(dit_loading, "_load_weights", lambda *a, **k: read.append(1))
    files = SimpleNamespace(dit=tiny_dit_root / MERGED, adapter=None)
    with pytest.raises(
        InputError, match=r"needs about .* of RAM \(1280x720, 81 frames, none, block_swap 0\)"
    ):
        plan_dit(files, ModelOptions(), "cpu", RunShape(720, 1280, 81), free=64 * 2**20)
    monkeypatch.setattr("infinitetalk.build.available_ram", lambda: 1024)
    with pytest.raises(InputError, match=r"needs about .* of RAM to load \(none, torch.float32\) but 0 MiB"):
        build_dit(files, ModelOptions(), device="cpu")
    assert read == []


def test_readme_memory_guide_is_the_preflight_table():
    assert guide_table() in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_estimate_matches_peak_rss_of_a_sampler_step(tmp_path):
    """Three configurations (fp32; bf16 with batched guidance; fp8 storage with two speakers): a real DiT
    loaded from a file and one sampler step in a fresh process; the preflight's host peak is within
    +-15 % of the measured peak RSS growth (glibc told to return freed memory, see bench/preflight_rss.py;
    measured 1.10, 1.06, 1.01)."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import preflight_rss
    finally:
        sys.path.remove(str(ROOT / "bench"))
    for case in preflight_rss.CASES:
        result = preflight_rss.measure(case, tmp_path)
        ratio = result["estimate"] / result["measured"]
        assert 0.85 <= ratio <= 1.15, (case.name, ratio, result)
        assert result["measured"] > 100 * 2**20  # the comparison is about more than allocator noise


def test_fallback_formula_when_the_fake_run_fails(monkeypatch, caplog):
    """The estimate never stops a generation: without a working fake-tensor run a fitted formula (within 5 %
    of the fake-tensor figures for the 14B, bf16 and fp32, 480p and 720p, batch 1 and 3) stands in."""
    from infinitetalk import preflight

    cfg = DiTConfig()
    for dtype in (torch.bfloat16, torch.float32):
        for run in (RunShape(480, 832, 81), RunShape(720, 1280, 81), RunShape(480, 832, 81, batch=3)):
            ratio = preflight._activation_formula(cfg, dtype, run) / preflight.activation_bytes(
                cfg, dtype, run
            )
            assert 0.95 < ratio < 1.05, (dtype, run, ratio)

    def broken(*args):
        raise NotImplementedError("no fake kernel for aten.something")

    monkeypatch.setattr(preflight, "_activation_bytes", broken)
    run = RunShape(480, 832, 81)
    assert preflight.activation_bytes(cfg, torch.bfloat16, run) == preflight._activation_formula(
        cfg, torch.bfloat16, run
    )
    assert (
        "fake-tensor run failed (no fake kernel for aten.something); using the fitted formula" in caplog.text
    )
