"""Timestep schedule, Euler step, guidance combinations, APG and the diffusers samplers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infinitetalk.errors import InputError
from infinitetalk.sampling import (
    COND,
    DROP_AUDIO,
    DROP_TEXT,
    UNCOND,
    GuidanceState,
    MomentumBuffer,
    adaptive_projected_guidance,
    euler_step,
    flow_timesteps,
    guidance_branches,
    make_sampler,
)


def reference_schedule(steps: int, shift: float) -> list[torch.Tensor]:
    """The reference's procedure, literally: per-element [t] tensors, float32 throughout."""
    ts = list(np.linspace(1000, 1, steps, dtype=np.float32)) + [0.0]
    out = []
    for t in ts:
        t = torch.tensor([t]) / 1000
        out.append(shift * t / (1 + (shift - 1) * t) * 1000)
    return out


@pytest.mark.parametrize("steps,shift", [(40, 7.0), (40, 11.0), (4, 2.0), (1, 5.0)])
def test_schedule_equals_reference_bit_for_bit(steps, shift):
    ours = flow_timesteps(steps, shift)
    ref = torch.cat(reference_schedule(steps, shift))
    assert ours.dtype == torch.float32 and ours.shape == (steps + 1,)
    assert torch.equal(ours, ref)
    assert ours[0] == 1000 and ours[-1] == 0 and (ours[:-1] > ours[1:]).all()


def test_shift_formula_in_float64():
    t = flow_timesteps(40, 7.0).double()
    u = torch.from_numpy(np.append(np.linspace(1000, 1, 40), 0.0)) / 1000
    assert torch.allclose(t, 7 * u / (1 + 6 * u) * 1000, atol=1e-3)  # float32 rounding only


def test_euler_integrates_linear_flow_exactly():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(1, 16, 3, 4, 4, generator=g), torch.randn(1, 16, 3, 4, 4, generator=g)
    sampler = make_sampler("euler", 8, 5.0)
    x = noise.clone()  # t = 1000
    for i in range(8):
        x = sampler.step(x, noise - x0, i)  # the model's v = noise - x0
    assert torch.allclose(x, x0, atol=1e-5)


def test_euler_step_sign_matches_reference():
    latent, pred = torch.ones(2), torch.tensor([2.0, -1.0])
    out = euler_step(latent, pred, torch.tensor(800.0), torch.tensor(600.0))
    assert torch.allclose(out, torch.tensor([1 - 2 * 0.2, 1 + 0.2]))  # x + (-v) * dt


@pytest.mark.parametrize("name", ["unipc", "dpm++"])
def test_diffusers_samplers_integrate_linear_flow(name):
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(1, 16, 2, 4, 4, generator=g), torch.randn(1, 16, 2, 4, 4, generator=g)
    sampler = make_sampler(name, 6, 3.0)
    sigma0 = float(sampler.timesteps[0]) / 1000
    assert 0.9 < sigma0 <= 1.0 and (sampler.timesteps[:-1] > sampler.timesteps[1:]).all()
    x = (1 - sigma0) * x0 + sigma0 * noise
    for i in range(6):
        x = sampler.step(x, noise - x0, i)
    assert torch.allclose(x, x0, atol=1e-4)


def test_unknown_sampler_is_an_input_error():
    with pytest.raises(InputError, match="sampler"):
        make_sampler("ddim", 4, 3.0)


def test_branches_by_text_scale():
    assert guidance_branches(5.0) == (COND, DROP_TEXT, UNCOND)
    assert guidance_branches(1.0) == (COND, DROP_AUDIO)


def test_three_and_two_pass_formulas():
    c, dt, u, da = (torch.tensor([v]) for v in (3.0, 2.0, 0.5, 1.0))
    three = GuidanceState(5.0, 4.0).combine({COND: c, DROP_TEXT: dt, UNCOND: u})
    assert torch.allclose(three, u + 5 * (c - dt) + 4 * (dt - u))
    two = GuidanceState(1.0, 2.0).combine({COND: c, DROP_AUDIO: da})
    assert torch.allclose(two, da + 2 * (c - da))


def reference_apg(diff, cond, buf, threshold):
    """The reference's APG on unbatched (C, T, H, W) tensors, in numpy float64."""
    buf["avg"] = diff + buf["m"] * buf["avg"]
    diff = buf["avg"]
    norm = np.sqrt((diff**2).sum())
    diff = diff * min(1.0, threshold / norm)
    unit = cond / np.sqrt((cond**2).sum())
    parallel = (diff * unit).sum() * unit
    return diff - parallel


def test_apg_matches_reference_over_steps():
    g = torch.Generator().manual_seed(2)
    state = GuidanceState(5.0, 4.0, use_apg=True, apg_norm_threshold=3.0)
    buf_t, buf_a = {"avg": 0.0, "m": -0.75}, {"avg": 0.0, "m": -0.75}
    for _ in range(3):
        preds = {
            k: torch.randn(1, 4, 2, 3, 3, generator=g, dtype=torch.float64) for k in (COND, DROP_TEXT, UNCOND)
        }
        ours = state.combine(preds)
        c, dt, u = (preds[k][0].numpy() for k in (COND, DROP_TEXT, UNCOND))
        ref = c + 4 * reference_apg(c - dt, c, buf_t, 3.0) + 3 * reference_apg(dt - u, c, buf_a, 3.0)
        np.testing.assert_allclose(ours[0].numpy(), ref, rtol=1e-10, atol=1e-10)


def test_apg_orthogonal_to_cond_and_clipped():
    cond = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).view(1, 1, 1, 2, 2)
    diff = torch.tensor([[100.0, 100.0, 0.0, 0.0]]).view(1, 1, 1, 2, 2)
    out = adaptive_projected_guidance(diff, cond, None, norm_threshold=55.0)
    assert out.flatten()[0].abs() < 1e-6  # no component along cond
    assert torch.isclose(out.norm(), torch.tensor(55.0 / 2**0.5), atol=1e-4)  # clipped to 55, then projected


def test_momentum_buffer():
    buf = MomentumBuffer(-0.5)
    buf.update(torch.tensor(2.0))
    buf.update(torch.tensor(1.0))
    assert float(buf.running_average) == 1.0 - 0.5 * 2.0


# ---------------------------------------------------------------------------- TeaCache
def _run_cache(cache, mods, x=None):
    """Feed a sequence of modulation tensors; returns which steps ran the blocks."""
    x = torch.ones(1, 4, 8) if x is None else x
    ran = []
    for i, mod in enumerate(mods):
        cache.set_step(i)
        calls = []

        def blocks(h, calls=calls):
            calls.append(1)
            return h * 2

        cache.run(x, mod, mod, blocks)
        ran.append(bool(calls))
    return ran


def test_teacache_schedule_ret_steps_and_threshold():
    from infinitetalk.teacache import TeaCache, TeaCacheConfig

    mods = [torch.full((1, 6, 8), 1.0 + 1e-4 * i) for i in range(10)]  # barely moving embedding
    cfg = TeaCacheConfig(steps=10, thresh=0.2, use_ret_steps=True)
    ran = _run_cache(TeaCache(cfg), mods)
    assert ran[:5] == [True] * 5 and not all(ran[5:])  # first 5 steps always computed, then skipping
    never = _run_cache(TeaCache(TeaCacheConfig(steps=10, thresh=0.0)), mods)
    assert all(never)  # threshold 0: nothing is skipped
    legacy = _run_cache(TeaCache(TeaCacheConfig(steps=10, thresh=0.2, use_ret_steps=False)), mods)
    assert legacy[0] and legacy[-1]  # without ret_steps: first and last step computed


def test_teacache_reuses_the_residual_of_its_own_branch():
    from infinitetalk.teacache import TeaCache, TeaCacheConfig

    cfg = TeaCacheConfig(steps=8, thresh=1e9)
    a, b = TeaCache(cfg), TeaCache(cfg)
    mod = torch.ones(1, 6, 8)
    for i in range(6):
        for cache, x, f in (
            (a, torch.ones(1, 2, 2), lambda h: h + 1),
            (b, torch.ones(1, 2, 2), lambda h: h + 5),
        ):
            cache.set_step(i)
            out = cache.run(x, mod, mod, f)
            assert torch.equal(out, f(x))  # a skipped step adds the branch's own residual
    assert (a.computed, a.skipped) == (5, 1) and (b.computed, b.skipped) == (5, 1)


def test_teacache_coefficients_by_size():
    from infinitetalk.teacache import TeaCacheConfig

    assert TeaCacheConfig(4, size="infinitetalk-720").coefficients[0] == 8.10705460e03
    assert TeaCacheConfig(4, size="64x64", use_ret_steps=False).coefficients[0] == -3.02331670e02
    with pytest.raises(InputError):
        TeaCacheConfig(4, thresh=-1)
