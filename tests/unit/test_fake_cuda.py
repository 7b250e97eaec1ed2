"""CUDA first contact without a GPU: the tiny real models and one pipeline window on fake CUDA tensors.

``FakeTensorMode`` gives every tensor a device and a dtype but no data, and it raises what a real GPU
would: an op mixing a CUDA tensor with a (non-scalar) CPU tensor fails with
``FakeTensorDeviceMismatchError``. The tiny checkpoints are loaded for real on the CPU, then every
parameter and buffer becomes a fake ``cuda:0`` tensor of the same dtype; inputs are made on ``cuda``.

Host syncs are audited by :class:`HostSyncAudit`, a dispatch mode under which every op runs: it records
each ``item()`` / ``tolist()`` / ``bool(tensor)`` (``aten._local_scalar_dense``), each data-dependent
shape (``nonzero``) and each copy between host and GPU (a blocking upload from host memory waits for the
GPU's stream too). On fake tensors a scalar has no value: the audit answers ``0.0`` (``1`` for integers)
so that code which needs one (TeaCache's skip decision, token counts) can go on, and counts it.

The frames leave the GPU at one place, ``frames_to_uint8``; the host sink beyond it gets zeros of the
right shape (:func:`sink_boundary`), since fake tensors hold no bytes.

What fake mode cannot run (CUDA streams of block swap, pinned memory, quanto's kernels, flash/sage
attention, torch.compile): docs/ARCHITECTURE.md "CUDA readiness"; ``python bench/gpu.py`` on a GPU.
"""

from __future__ import annotations

import traceback

import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorDeviceMismatchError, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from infinitetalk.pipeline import (
    AudioEmbedding,
    GenerationConfig,
    InfiniteTalkPipeline,
    StillImage,
)
from infinitetalk.sampling import call_groups, guidance_branches
from infinitetalk.sinks import MemorySink
from infinitetalk.teacache import TeaCache, TeaCacheConfig
from infinitetalk.windows import plan_windows

CUDA = torch.device("cuda", 0)
WAN = ("weights", "Wan2.1-I2V-14B-480P")
SYNC_OPS = {
    torch.ops.aten._local_scalar_dense.default: "item/tolist/bool",
    torch.ops.aten.nonzero.default: "nonzero (data-dependent shape)",
    torch.ops.aten.is_nonzero.default: "bool(tensor)",
}

COPY_OPS = (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default)


# ============================================================================ fake CUDA helpers
def to_fake_cuda(obj, mode: FakeTensorMode):
    """Every parameter, buffer (and, for the encoder wrappers, tensor attribute) -> fake ``cuda:0``."""

    def fake(t: torch.Tensor) -> torch.Tensor:
        real = t.detach()
        with mode:
            return mode.from_tensor(real).to(CUDA)

    module = obj if isinstance(obj, torch.nn.Module) else obj.model
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None:
                sub._parameters[name] = torch.nn.Parameter(fake(p), requires_grad=False)
        for name, b in list(sub._buffers.items()):
            if b is not None:
                sub._buffers[name] = fake(b)
    if not isinstance(obj, torch.nn.Module):
        for name, value in list(vars(obj).items()):
            if isinstance(value, torch.Tensor):
                setattr(obj, name, fake(value))
    return obj


class HostSyncAudit(TorchDispatchMode):
    """Records host syncs on CUDA tensors and host <-> GPU copies, each with the line that made it."""

    def __init__(self):
        super().__init__()
        self.syncs: list[tuple[str, str]] = []
        self.to_host: list[tuple[tuple[int, ...], str]] = []
        self.to_device: list[tuple[tuple[int, ...], str]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SYNC_OPS:
            if args[0].device.type == "cuda":
                self.syncs.append((SYNC_OPS[func], _caller()))
            if func is torch.ops.aten._local_scalar_dense.default and isinstance(args[0], FakeTensor):
                return 0.0 if args[0].dtype.is_floating_point else 1  # a fake tensor has no value
        out = func(*args, **kwargs)
        if func in COPY_OPS:
            src, dst = (args[1], args[0]) if func is torch.ops.aten.copy_.default else (args[0], out)
            if src.device.type == "cuda" and dst.device.type == "cpu":
                self.to_host.append((tuple(dst.shape), _caller()))
            if src.device.type == "cpu" and dst.device.type == "cuda":
                self.to_device.append((tuple(dst.shape), _caller()))
        return out


def _caller() -> str:
    """The innermost frame in infinitetalk/, diffusers or this file, for the failure message."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if any(part in frame.filename for part in ("/infinitetalk/", "/diffusers/", "test_fake_cuda")):
            return f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} {frame.name}: {frame.line}"
    return "?"


ONE_TIME_UPLOADS = (  # (file, function): the sampler's schedule once per window, the RoPE table once per run
    ("sampling.py", "__init__"),
    ("scheduling_", "set_timesteps"),
    ("test_fake_cuda.py", "build_sampler"),
    ("dit.py", "rope_freqs"),
)


def _one_time_upload(where: str) -> bool:
    return any(where.startswith(f) and f" {fn}:" in where for f, fn in ONE_TIME_UPLOADS)


def fake_dit(root, mode, dtype, speakers=1):
    from infinitetalk.loading.dit import load_dit
    from infinitetalk.model.ops import casting_operations

    adapter = (
        root
        / "weights"
        / "InfiniteTalk"
        / ("single" if speakers == 1 else "multi")
        / "infinitetalk.safetensors"
    )
    ops = casting_operations if dtype == torch.float8_e4m3fn else None
    model = load_dit(root.joinpath(*WAN), adapter, device="cpu", dtype=dtype, operations=ops).eval()
    return to_fake_cuda(model, mode)


def dit_inputs(cfg, batch: int, speakers: int, dtype, frames: int = 5, hw=(4, 6)):
    """Inputs as the pipeline makes them, on cuda: x/t float32, the rest in the compute dtype."""
    t_lat = (frames - 1) // 4 + 1
    return dict(
        x=torch.randn(batch, 16, t_lat, *hw, device=CUDA),
        t=torch.full((batch,), 731.5, device=CUDA),
        context=torch.randn(batch, 7, cfg.text_dim, device=CUDA, dtype=dtype),
        clip_fea=torch.randn(batch, 257, cfg.clip_dim, device=CUDA, dtype=dtype),
        y=torch.randn(batch, 20, t_lat, *hw, device=CUDA, dtype=dtype),
        audio=torch.randn(
            batch, speakers, frames, 5, cfg.audio_blocks, cfg.audio_channels, device=CUDA, dtype=dtype
        ),
        ref_target_masks=torch.ones(3, *hw, device=CUDA) if speakers == 2 else None,
    )


def test_audit_catches_every_kind_of_host_sync():
    """The audit itself: each way of waiting on the GPU is recorded, host scalars are not."""
    mode, audit = FakeTensorMode(), HostSyncAudit()
    with mode, audit:
        x = torch.randn(4, device=CUDA)
        x.sum().item()
        x.tolist()
        bool(x[0] > 0)
        x.cpu()
        torch.ones(2).sum().item()  # host tensor: no sync
        with pytest.raises(FakeTensorDeviceMismatchError, match="cuda:0 and cpu"):
            x + torch.ones(4)  # the device mix a GPU rejects
    assert [kind for kind, _ in audit.syncs] == ["item/tolist/bool"] * (1 + 4 + 1)  # item, 4 x tolist, bool
    assert [shape for shape, _ in audit.to_host] == [(4,)]


# ============================================================================ the DiT forward
@pytest.mark.parametrize("speakers", [1, 2])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float8_e4m3fn])
def test_dit_forward_on_fake_cuda(tiny_root, dtype, speakers):
    """Batched guidance (the pipeline's call groups): one call for the branches sharing the speaker
    count; fp8 storage casts each block linear to bf16 per call. Output float32 on cuda, no host sync."""
    mode, audit = FakeTensorMode(), HostSyncAudit()
    model = fake_dit(tiny_root, mode, dtype, speakers)
    compute = torch.bfloat16 if dtype == torch.float8_e4m3fn else dtype
    assert model.compute_dtype == compute
    groups = call_groups(guidance_branches(5.0), speakers, batch=True)
    with mode, audit, torch.no_grad():
        for group in groups:
            inputs = dit_inputs(model.config, len(group), 1 if group == ("uncond",) else speakers, compute)
            if inputs["audio"].shape[1] == 1:
                inputs["ref_target_masks"] = None
            out = model(**inputs)
            assert out.device == CUDA and out.dtype == torch.float32
            assert out.shape == inputs["x"].shape
    assert [len(g) for g in groups] == ([3] if speakers == 1 else [2, 1])
    assert audit.syncs == [] and audit.to_host == []


def test_teacache_block_cache_on_fake_cuda(tiny_root):
    """TeaCache computes, then skips (adds the cached residual) on device; its decision is the one
    intended host sync: one ``item()`` per call once skipping is allowed, none in the forced steps."""
    mode, audit = FakeTensorMode(), HostSyncAudit()
    model = fake_dit(tiny_root, mode, torch.bfloat16)
    cfg = TeaCacheConfig(steps=8, thresh=0.2)
    cache = TeaCache(cfg)
    with mode, audit, torch.no_grad():
        inputs = dit_inputs(model.config, 1, 1, torch.bfloat16)
        syncs_per_step = []
        for step in range(cfg.steps):
            cache.set_step(step)
            before = len(audit.syncs)
            out = model(**inputs, block_cache=cache)
            syncs_per_step.append(len(audit.syncs) - before)
            assert out.device == CUDA and out.dtype == torch.float32
    assert cache.previous_residual.device == CUDA and cache.previous_residual.dtype == torch.bfloat16
    # steps 0..4 forced (ret_steps 5); 5..7 decide from a host value (the audit answers rel = 0: skip)
    assert syncs_per_step == [0] * cfg.ret_steps + [1] * (cfg.steps - cfg.ret_steps)
    assert {where for _, where in audit.syncs} == {next(w for _, w in audit.syncs)}
    assert "teacache.py" in audit.syncs[0][1]
    # rel 0 adds poly(0) = 0.1325 per step: skip (0.13), compute (0.27 >= 0.2, reset), skip
    assert cache.computed == cfg.ret_steps + 1 and cache.skipped == 2
    assert audit.to_host == []


# ============================================================================ one pipeline window
def fake_pipeline(root, mode, speakers=1):
    """The tiny real DiT, VAE (diffusers ``AutoencoderKLWan``), CLIP and umT5 on fake CUDA, bf16 compute."""
    from infinitetalk.encoders.clip import load_clip_vision
    from infinitetalk.encoders.text import load_text_encoder
    from infinitetalk.encoders.vae import load_vae

    wan = root.joinpath(*WAN)
    clip = wan / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
    return InfiniteTalkPipeline(
        fake_dit(root, mode, torch.bfloat16, speakers),
        to_fake_cuda(load_vae(wan / "Wan2.1_VAE.pth", device="cpu", dtype=torch.bfloat16), mode),
        to_fake_cuda(load_clip_vision(clip, device="cpu", dtype=torch.bfloat16), mode),
        to_fake_cuda(load_text_encoder(wan / "models_t5_umt5-xxl-enc-bf16.pth", device="cpu"), mode),
        device=CUDA,
        dtype=torch.bfloat16,
    )


def sink_boundary(monkeypatch):
    """Frames reach the (host) sink through ``Tensor.numpy()``: a fake tensor has no bytes to give, so
    it gives zeros of its shape and dtype. Everything before it is the library's own code."""
    real_numpy = torch.Tensor.numpy

    def numpy(self, *args, **kwargs):
        if isinstance(self, FakeTensor):
            assert self.device.type == "cpu", "numpy() of a CUDA tensor"
            return np.zeros(
                tuple(self.shape), dtype={torch.uint8: np.uint8, torch.float32: np.float32}[self.dtype]
            )
        return real_numpy(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "numpy", numpy)


def host_built_sampler(mode):
    """diffusers' DPM-Solver computes its schedule on the host from its own tables (``.numpy()`` of
    ``lambda_t``), which fake tensors cannot give: build it for real on the CPU, then put timesteps and
    sigmas on the fake GPU as :class:`DiffusersSampler` does for ``device=cuda``."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    from infinitetalk.sampling import make_sampler

    def build_sampler(name, steps, shift, device):
        with unset_fake_temporarily():
            sampler = make_sampler(name, steps, shift, "cpu")
        with mode:
            for obj, attr in (
                (sampler, "timesteps"),
                (sampler.scheduler, "timesteps"),
                (sampler.scheduler, "sigmas"),
            ):
                setattr(obj, attr, mode.from_tensor(getattr(obj, attr)).to(device))
        return sampler

    return build_sampler


def run_windows(root, monkeypatch, sampler="euler", speakers=1, **extra):
    """Encode, then two windows (the second starts from the motion frames) through ``_run_window``:
    conditioning, VAE encode/decode, the step loop with guidance and the real scheduler, colour match,
    sink. Returns the audit, the syncs made inside ``denoise_window``, the GPU -> host copies of each
    window, the sink and the progress events."""
    # module constants (colour matrices) are real CPU tensors: let fake mode take them as fake CPU tensors
    mode, audit = FakeTensorMode(allow_non_fake_inputs=True), HostSyncAudit()
    sink_boundary(monkeypatch)
    pipe = fake_pipeline(root, mode, speakers)
    config = GenerationConfig(
        size="32x32", frame_num=9, motion_frame=5, steps=3, sampler=sampler, color_correction_strength=0.7, **extra
    )  # fmt: skip
    plans, total = plan_windows(13, config.frame_num, config.motion_frame, "streaming")
    assert len(plans) == 2 and total == 13
    loop_syncs, events, per_window = [], [], []
    real_denoise = InfiniteTalkPipeline.denoise_window

    def denoise(self, *args, **kwargs):
        before, uploads = len(audit.syncs), len(audit.to_device)
        latent = real_denoise(self, *args, **kwargs)
        loop_syncs.extend(audit.syncs[before:])
        # an upload from pageable host memory waits for the GPU's stream: only one-time tables
        loop_syncs.extend(("upload", w) for _, w in audit.to_device[uploads:] if not _one_time_upload(w))
        assert latent.device == CUDA and latent.dtype == torch.float32
        return latent

    monkeypatch.setattr(InfiniteTalkPipeline, "denoise_window", denoise)
    if sampler == "dpm++":
        monkeypatch.setattr("infinitetalk.pipeline.make_sampler", host_built_sampler(mode))
    image = StillImage(np.full((40, 48, 3), 128, np.uint8))
    features = torch.zeros(speakers, 13, 3, 96)  # tiny wav2vec2: 3 layers of 96, in host memory
    sink, motion = MemorySink(), None
    with mode, audit, torch.no_grad():
        enc = pipe.encode(image, AudioEmbedding(mode.from_tensor(features)), config, plans)
        assert enc.context.device == CUDA and enc.context.dtype == torch.bfloat16
        assert speakers == 1 or (enc.masks.device == CUDA and enc.masks.shape == (3, 4, 4))
        generator = torch.Generator()  # (a CUDA generator needs a CUDA driver: the draws are shapes here)
        for plan in plans:
            audit.to_host.clear()
            motion = pipe._run_window(
                plan, enc, image, config, motion, generator, sink, len(plans), events.append, lambda: False
            )
            per_window.append(list(audit.to_host))
            assert motion.device == CUDA and motion.dtype == torch.float32
            assert motion.shape == (1, 3, config.motion_frame, 32, 32)
    return audit, loop_syncs, per_window, sink, events


@pytest.mark.parametrize(
    "sampler, speakers, extra",
    [
        ("euler", 1, {}),
        ("euler", 2, {"batch_guidance": True}),
        ("unipc", 1, {"use_apg": True, "batch_guidance": True}),
        ("dpm++", 1, {"text_scale": 1.0}),
    ],
)
def test_pipeline_windows_on_fake_cuda(tiny_root, monkeypatch, sampler, speakers, extra):
    """Per window the only GPU -> host copy is the new frames on their way to the sink (``frames_to_uint8``);
    no host sync anywhere, in the step loop or around it (the motion frames stay on the GPU)."""
    audit, loop_syncs, per_window, sink, events = run_windows(
        tiny_root, monkeypatch, sampler, speakers, **extra
    )
    assert loop_syncs == [], f"host syncs in the step loop: {loop_syncs}"
    assert audit.syncs == [], f"host syncs outside the step loop: {audit.syncs}"
    assert [[shape for shape, _ in w] for w in per_window] == [[(9, 32, 32, 3)], [(4, 32, 32, 3)]]
    assert all("frames_to_uint8" in where for w in per_window for _, where in w), per_window
    assert sum(" rope_freqs:" in where for _, where in audit.to_device) == 1
    assert sink.frames.shape == (13, 32, 32, 3) and sink.frames.dtype == np.uint8
    assert [e.step for e in events if e.window == 1] == [0, 1, 2, 3]
    assert all(e.latent_preview.device == CUDA for e in events if e.step)


def test_a_sync_in_the_step_loop_fails(tiny_root, monkeypatch):
    """The loop check can fail: a ``float(tensor)`` slipped into the Euler step is reported per step."""
    import infinitetalk.sampling as sampling

    real_step = sampling.euler_step

    def logging_step(latent, pred, t, t_next):
        float(pred.abs().max())  # e.g. a debug log of the prediction's range
        return real_step(latent, pred, t, t_next)

    monkeypatch.setattr(sampling, "euler_step", logging_step)
    _, loop_syncs, *_ = run_windows(tiny_root, monkeypatch)
    assert len(loop_syncs) == 2 * 3 and all(" logging_step:" in where for _, where in loop_syncs)
