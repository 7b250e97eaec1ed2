"""The window schedule of a run and the audio each window reads, importable without the pipeline.

Window ``k`` covers video frames ``[k * stride, k * stride + frame_num)`` with
``stride = frame_num - motion_frame`` (spec §4); :func:`plan_windows` lists the windows and the output
length, :func:`audio_window` cuts the 5 audio frames around every video frame of one window out of the
run's features (with the reference's mirror padding past the end, never built), :func:`latent_grid` is the
latent size of one window, and :func:`window_prompts` the prompt of each window from a schedule. The
pipeline, the memory preflight and the dubbing filter all read the schedule from here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

AUDIO_WINDOW_OFFSETS = (-2, -1, 0, 1, 2)  # audio frames around each video frame
VAE_STRIDE_T, VAE_STRIDE_HW, LATENT_CHANNELS = 4, 8, 16


@dataclass(frozen=True)
class WindowPlan:
    """One window of the schedule: video frames ``[start, start + frame_num)``."""

    index: int
    start: int
    keep_from: int  # first frame of the window written to the sink (0 or motion_frame)
    keep: int  # frames written (after trimming to the video length)
    reference_frame: int  # index of the source frame conditioning this window


class ReferenceSource(Protocol):
    """Frames conditioning the video: ``frame(i) -> uint8 (H, W, 3)`` at 25 fps, ``num_frames``."""

    num_frames: int

    def frame(self, i: int) -> np.ndarray: ...


def plan_windows(
    num_frames: int,
    frame_num: int,
    motion_frame: int,
    mode: str,
    max_frame_num: int | None = None,
    source_frames: int = 1,
    is_video: bool = False,
) -> tuple[list[WindowPlan], int]:
    """The window schedule and the output length (spec §4, minus the reference's forced second window).

    Streaming: windows until one ends at or past ``target = min(max_frame_num, L)``; output ``target``
    frames. Clip: one window, output ``min(frame_num, L)`` frames.
    """
    stride = frame_num - motion_frame
    if mode == "clip":
        target = min(frame_num, num_frames)
        count = 1
    else:
        target = num_frames if max_frame_num is None else min(max_frame_num, num_frames)
        count = 1 if target <= frame_num else 1 + math.ceil((target - frame_num) / stride)
    plans, written = [], 0
    for k in range(count):
        start = k * stride
        keep_from = 0 if k == 0 else motion_frame
        keep = min(frame_num - keep_from, target - written)
        ref = min(start, source_frames - 1) if is_video else 0
        plans.append(WindowPlan(k, start, keep_from, keep, ref))
        written += keep
    return plans, target


def plan_run(config, audio_frames: int, source: ReferenceSource) -> tuple[list[WindowPlan], int]:
    """:func:`plan_windows` of a run: ``config``'s (a ``GenerationConfig``) window sizes, mode and cap, ``audio_frames`` of speech and
    the reference ``source`` (a video gives each window its own reference frame)."""
    is_video = getattr(source, "is_video", True) and source.num_frames > 1
    return plan_windows(
        audio_frames,
        config.frame_num,
        config.motion_frame,
        config.mode,
        config.max_frame_num,
        source.num_frames,
        is_video,
    )


def padded_audio_length(length: int, end: int) -> int:
    """Frames of the reference's mirror-padded features when the last window ends at ``end``.

    The reference appends ``miss = end - L + 3`` frames, ``f[-miss:]`` reversed, when ``end >= L``
    (fewer when ``miss > L``: the slice then holds all ``L`` frames).
    """
    return length if end < length else length + min(end - length + 3, length)


def audio_window(
    features: torch.Tensor, start: int, frame_num: int, padded_length: int | None = None
) -> torch.Tensor:
    """(S, L, layers, C) -> (S, frame_num, 5, layers, C): 5 audio frames around each video frame.

    Indices are clamped to ``[0, padded_length)`` (default ``L``: no padding) and frames past the end read
    the mirror padding without building it: padded ``[L + j]`` is ``f[L - 1 - j]``. Only the window's rows
    are read, so ``features`` may be file-backed and is never copied whole.
    """
    length = features.shape[1]
    padded = length if padded_length is None else padded_length
    centres = torch.arange(start, start + frame_num)[:, None] + torch.tensor(AUDIO_WINDOW_OFFSETS)[None]
    centres = centres.clamp(0, padded - 1)  # (frame_num, 5)
    centres = torch.where(centres < length, centres, 2 * length - 1 - centres)
    return features[:, centres]


def latent_grid(frame_num: int, height: int, width: int) -> tuple[int, int, int]:
    """``(T, h, w)`` latent grid of one window of ``frame_num`` frames at ``height x width`` pixels: the VAE
    keeps the first frame and packs every 4 after it into one latent frame, and divides the sides by 8."""
    return (frame_num - 1) // VAE_STRIDE_T + 1, height // VAE_STRIDE_HW, width // VAE_STRIDE_HW


def window_prompts(
    prompts: Sequence[tuple[int, str]], plans: Sequence[WindowPlan], default: str
) -> list[str]:
    """The prompt of each window from a schedule of ``(first video frame, prompt)`` pairs: the one active at
    the middle of the frames the window adds to the video (``default`` before the first entry)."""
    schedule = sorted((int(start), str(prompt)) for start, prompt in prompts)
    chosen = []
    for plan in plans:
        middle = plan.start + plan.keep_from + max(plan.keep - 1, 0) // 2
        active = [prompt for start, prompt in schedule if start <= middle]
        chosen.append(active[-1] if active else default)
    return chosen
