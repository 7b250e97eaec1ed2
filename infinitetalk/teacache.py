"""TeaCache: skip the transformer blocks on steps where the timestep embedding barely moved.

One :class:`TeaCache` object per guidance branch (or per batched model call), new for every window:
the reference keeps one global counter for all branches and mis-indexes them when only two branches
run; here each branch owns its state. The model calls ``cache.run(x, e, e0, run_blocks)`` once per
forward (``WanInfiniteTalkDiT.forward(..., block_cache=cache)``): the cache either runs the blocks and
remembers their residual, or adds the remembered residual instead.

Decision (per branch, step ``i`` of ``steps``): always compute during the first ``ret_steps`` steps and
from ``cutoff`` on; otherwise accumulate ``poly(rel_l1(mod, prev_mod))`` and skip while the sum stays
below ``thresh`` (the sum resets whenever the blocks run). ``mod`` is ``e0`` (the 6-way modulation)
with ``use_ret_steps`` and ``e`` (the time embedding) without, as the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import InputError

# Rescaling polynomials fitted by the reference for InfiniteTalk (highest power first).
_COEFFICIENTS = {
    ("infinitetalk-480", True): (
        2.57151496e05,
        -3.54229917e04,
        1.40286849e03,
        -1.35890334e01,
        1.32517977e-01,
    ),
    ("infinitetalk-720", True): (
        8.10705460e03,
        2.13393892e03,
        -3.72934672e02,
        1.66203073e01,
        -4.17769401e-02,
    ),
    ("infinitetalk-480", False): (
        -3.02331670e02,
        2.23948934e02,
        -5.25463970e01,
        5.87348440e00,
        -2.01973289e-01,
    ),
    ("infinitetalk-720", False): (-114.36346466, 65.26524496, -18.82220707, 4.91518089, -0.23412683),
}


@dataclass(frozen=True)
class TeaCacheConfig:
    """Threshold and schedule; ``size`` picks the coefficients (explicit ``WxH`` sizes use the 480p ones)."""

    steps: int
    thresh: float = 0.2
    size: str = "infinitetalk-480"
    use_ret_steps: bool = True

    @property
    def coefficients(self) -> tuple[float, ...]:
        key = "infinitetalk-720" if self.size == "infinitetalk-720" else "infinitetalk-480"
        return _COEFFICIENTS[(key, self.use_ret_steps)]

    @property
    def ret_steps(self) -> int:
        return 5 if self.use_ret_steps else 1

    @property
    def cutoff(self) -> int:
        return self.steps if self.use_ret_steps else self.steps - 1

    def __post_init__(self) -> None:
        if self.thresh < 0:
            raise InputError(
                f"teacache threshold {self.thresh} is negative: use a value >= 0 (0.2 is typical)"
            )


class TeaCache:
    """Skip/compute state of one guidance branch for one window. Call :meth:`set_step` before each forward."""

    def __init__(self, config: TeaCacheConfig):
        self.config = config
        self._poly = np.poly1d(config.coefficients)
        self.step = 0
        self.accumulated = 0.0
        self.previous_mod: torch.Tensor | None = None
        self.previous_residual: torch.Tensor | None = None
        self.computed = 0
        self.skipped = 0

    def set_step(self, step: int) -> None:
        self.step = step

    def should_compute(self, mod: torch.Tensor) -> bool:
        """Decide for this step from the modulated embedding; updates the accumulator and ``previous_mod``."""
        cfg = self.config
        forced = self.step < cfg.ret_steps or self.step >= cfg.cutoff or self.previous_mod is None
        if forced or self.previous_residual is None:
            compute = True
        else:
            prev = self.previous_mod
            rel = ((mod - prev).abs().mean() / prev.abs().mean()).item()
            self.accumulated += float(self._poly(rel))
            compute = self.accumulated >= cfg.thresh
        if compute:
            self.accumulated = 0.0
        self.previous_mod = mod.detach().clone()
        return compute

    def run(self, x: torch.Tensor, e: torch.Tensor, e0: torch.Tensor, run_blocks) -> torch.Tensor:
        """The model's hook: ``x (B, L, C)`` before the blocks -> after the blocks (or cached)."""
        mod = e0 if self.config.use_ret_steps else e
        if self.should_compute(mod) or self.previous_residual.shape != x.shape:
            out = run_blocks(x)
            self.previous_residual = out - x
            self.computed += 1
            return out
        self.skipped += 1
        return x + self.previous_residual.to(x.dtype)
