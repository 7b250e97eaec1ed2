"""Flow-matching sampling: timestep schedule, Euler step, named guidance branches, APG, schedulers.

Conventions (spec §4): the model predicts ``v = noise - x0`` with ``x_t = (1 - t) x0 + t noise`` and
``t`` in ``[0, 1000]``. The reference negates the guided prediction and integrates
``x += (-v) * (t_i - t_{i+1}) / 1000``, which is the plain Euler step towards ``t = 0``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from .errors import InputError

logger = logging.getLogger(__name__)

NUM_TRAIN_TIMESTEPS = 1000

# Guidance branch names: every model call is made for exactly one of these.
COND = "cond"  # prompt + audio
DROP_TEXT = "drop_text"  # negative prompt + audio
UNCOND = "uncond"  # negative prompt + silent audio (one speaker, as the reference)
DROP_AUDIO = "drop_audio"  # prompt + silent audio (one speaker)

SAMPLERS = ("euler", "unipc", "dpm++")


# ----------------------------------------------------------------------------- schedule
def shift_timesteps(t: torch.Tensor, shift: float, num_train: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """``t' = s u / (1 + (s - 1) u)`` on ``u = t / num_train``, back to ``[0, num_train]`` (float32 maths)."""
    u = t / num_train
    return (shift * u / (1 + (shift - 1) * u)) * num_train


def flow_timesteps(steps: int, shift: float, num_train: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """``linspace(num_train, 1, steps)`` + ``[0]``, shifted -> (steps + 1,) float32, first ``num_train``.

    Computed in float32 element by element, exactly as the reference does on its ``[1]`` tensors.
    """
    if steps < 1:
        raise InputError(f"sampling steps {steps} must be at least 1")
    base = np.linspace(num_train, 1, steps, dtype=np.float32)
    t = torch.from_numpy(np.concatenate([base, np.zeros(1, dtype=np.float32)]))
    return shift_timesteps(t, float(shift), num_train)


def euler_step(
    latent: torch.Tensor, pred: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor
) -> torch.Tensor:
    """One Euler step of the flow ODE: ``latent + (-pred) * (t - t_next) / 1000``."""
    dt = (t - t_next) / NUM_TRAIN_TIMESTEPS  # float32 scalar tensor
    return latent + (-pred) * dt


# ----------------------------------------------------------------------------- samplers
class Sampler(Protocol):
    """One window's integrator: ``timesteps[i]`` goes to the model, ``step`` advances the latent."""

    timesteps: torch.Tensor  # (steps,) float32 in [0, 1000]

    def step(self, latent: torch.Tensor, pred: torch.Tensor, i: int) -> torch.Tensor: ...


class EulerSampler:
    """The reference sampler (default): shifted linear schedule, Euler update."""

    def __init__(self, steps: int, shift: float, device: torch.device | str = "cpu"):
        self.schedule = flow_timesteps(steps, shift).to(device)  # (steps + 1,)
        self.timesteps = self.schedule[:-1]

    def step(self, latent: torch.Tensor, pred: torch.Tensor, i: int) -> torch.Tensor:
        return euler_step(latent, pred, self.schedule[i], self.schedule[i + 1])


class DiffusersSampler:
    """diffusers ``UniPCMultistepScheduler`` / ``DPMSolverMultistepScheduler`` in flow mode.

    ``prediction_type="flow_prediction"`` takes the model's ``v = noise - x0`` as is; ``use_flow_sigmas``
    with ``flow_shift`` gives the same shifted schedule family as the Euler sampler. The scheduler
    keeps a short history of predictions, so make a new one per window.
    """

    def __init__(self, kind: str, steps: int, shift: float, device: torch.device | str = "cpu"):
        from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

        common = dict(
            num_train_timesteps=NUM_TRAIN_TIMESTEPS,
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=float(shift),
        )
        if kind == "unipc":
            self.scheduler = UniPCMultistepScheduler(**common)
        else:
            self.scheduler = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", **common)
        self.scheduler.set_timesteps(steps, device=device)
        # Step i is always timesteps[i]: without a begin index the scheduler finds its first step by
        # searching its timesteps (``nonzero().item()``), a host sync on the GPU at every window's start.
        self.scheduler.set_begin_index(0)
        # diffusers keeps its sigmas on the host and copies the ones a step needs to the device, each copy
        # a stream sync; once on the device, the whole step stays there.
        self.scheduler.sigmas = self.scheduler.sigmas.to(device)
        # The model gets the exact sigma * 1000 (diffusers' own timesteps are rounded to integers).
        self.timesteps = (self.scheduler.sigmas[:-1] * NUM_TRAIN_TIMESTEPS).to(
            device, torch.float32
        )  # (steps,)

    def step(self, latent: torch.Tensor, pred: torch.Tensor, i: int) -> torch.Tensor:
        return self.scheduler.step(pred, self.scheduler.timesteps[i], latent, return_dict=False)[0]


def make_sampler(name: str, steps: int, shift: float, device: torch.device | str = "cpu") -> Sampler:
    """A fresh sampler for one window: ``euler`` (reference), ``unipc`` or ``dpm++``."""
    if name == "euler":
        return EulerSampler(steps, shift, device)
    if name in ("unipc", "dpm++"):
        return DiffusersSampler(name, steps, shift, device)
    raise InputError(f"sampler '{name}' is unknown: use one of {', '.join(SAMPLERS)}")


# ----------------------------------------------------------------------------- guidance
def guidance_branches(text_scale: float) -> tuple[str, ...]:
    """Branches run every step: three with text guidance, two when ``text_scale == 1`` (distilled LoRAs)."""
    if math.isclose(text_scale, 1.0):
        return (COND, DROP_AUDIO)
    return (COND, DROP_TEXT, UNCOND)


class MomentumBuffer:
    """Running average ``avg <- value + momentum * avg`` used by APG (negative momentum by default)."""

    def __init__(self, momentum: float):
        self.momentum = momentum
        self.running_average: torch.Tensor | float = 0.0

    def update(self, value: torch.Tensor) -> None:
        self.running_average = value + self.momentum * self.running_average


def _sample_dims(x: torch.Tensor) -> list[int]:
    return list(range(1, x.ndim))  # every dim but the batch


def _project(v0: torch.Tensor, v1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split v0 into its parts parallel and orthogonal to v1 (per sample, in float64)."""
    dtype, dims = v0.dtype, _sample_dims(v0)
    v0, v1 = v0.double(), v1.double()
    unit = torch.nn.functional.normalize(v1.flatten(1), dim=1).view_as(v1)
    parallel = (v0 * unit).sum(dim=dims, keepdim=True) * unit
    return parallel.to(dtype), (v0 - parallel).to(dtype)


def adaptive_projected_guidance(
    diff: torch.Tensor,
    pred_cond: torch.Tensor,
    momentum_buffer: MomentumBuffer | None = None,
    eta: float = 0.0,
    norm_threshold: float = 55.0,
) -> torch.Tensor:
    """APG (arXiv 2410.02416): momentum, norm clipping, then drop the part of ``diff`` along ``pred_cond``."""
    if momentum_buffer is not None:
        momentum_buffer.update(diff)
        diff = momentum_buffer.running_average
    if norm_threshold > 0:
        norm = diff.norm(p=2, dim=_sample_dims(diff), keepdim=True)
        diff = diff * torch.minimum(torch.ones_like(diff), norm_threshold / norm)
    parallel, orthogonal = _project(diff, pred_cond)
    return orthogonal + eta * parallel


@dataclass
class GuidanceState:
    """Per-window guidance settings and APG momentum (new for every window)."""

    text_scale: float
    audio_scale: float
    use_apg: bool = False
    apg_momentum: float = -0.75
    apg_norm_threshold: float = 55.0
    text_momentum: MomentumBuffer | None = field(default=None, init=False)
    audio_momentum: MomentumBuffer | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.use_apg:
            self.text_momentum = MomentumBuffer(self.apg_momentum)
            self.audio_momentum = MomentumBuffer(self.apg_momentum)

    @property
    def branches(self) -> tuple[str, ...]:
        return guidance_branches(self.text_scale)

    def combine(self, preds: dict[str, torch.Tensor]) -> torch.Tensor:
        """Guided flow from the named branch predictions (the reference's formulas, un-negated)."""
        if self.use_apg:
            return self._combine_apg(preds)
        s_t, s_a = self.text_scale, self.audio_scale
        if DROP_AUDIO in preds:
            return preds[DROP_AUDIO] + s_a * (preds[COND] - preds[DROP_AUDIO])
        cond, drop_text, uncond = preds[COND], preds[DROP_TEXT], preds[UNCOND]
        return uncond + s_t * (cond - drop_text) + s_a * (drop_text - uncond)

    def _combine_apg(self, preds: dict[str, torch.Tensor]) -> torch.Tensor:
        cond, thr = preds[COND], self.apg_norm_threshold
        if DROP_AUDIO in preds:
            audio = adaptive_projected_guidance(
                cond - preds[DROP_AUDIO], cond, self.audio_momentum, norm_threshold=thr
            )
            return cond + (self.audio_scale - 1) * audio
        text = adaptive_projected_guidance(
            cond - preds[DROP_TEXT], cond, self.text_momentum, norm_threshold=thr
        )
        audio = adaptive_projected_guidance(
            preds[DROP_TEXT] - preds[UNCOND], cond, self.audio_momentum, norm_threshold=thr
        )
        return cond + (self.text_scale - 1) * text + (self.audio_scale - 1) * audio


def call_groups(branches: tuple[str, ...], num_speakers: int, batch: bool) -> list[tuple[str, ...]]:
    """Which guidance branches share one model call: each its own without ``batch``; with it, the branches
    that see every speaker (all of them for one speaker) in one call, the silent ones alone."""
    if not batch:
        return [(b,) for b in branches]
    full = tuple(b for b in branches if b in (COND, DROP_TEXT) or num_speakers == 1)
    rest = [(b,) for b in branches if b not in full]
    return [full, *rest]
