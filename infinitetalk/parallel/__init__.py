"""Sequence parallelism: one DiT forward split across processes (``torchrun``), Ulysses and ring attention.

- :mod:`.layout`: :class:`TokenSpan` and the single-process strategy (the model's default);
- :mod:`.sequence`: :class:`SequenceParallel`, the multi-process strategy;
- :mod:`.collectives`: the all-to-all, ring attention and gathers on ``torch.distributed``;
- :mod:`.launch`: joining torchrun's process group, rank-0-only output.

See docs/MULTI_GPU.md.
"""

from .launch import ParallelSession, start_session
from .layout import SINGLE_PROCESS, SingleProcess, TokenSpan
from .sequence import SequenceParallel, check_sizes

__all__ = [
    "SINGLE_PROCESS",
    "ParallelSession",
    "SequenceParallel",
    "SingleProcess",
    "TokenSpan",
    "check_sizes",
    "start_session",
]
