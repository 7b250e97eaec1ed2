"""Running one generation over several processes started by ``torchrun`` (one per GPU).

Every process runs the whole pipeline on identical inputs (same seed, same conditioning), as the
reference does with xfuser; only the DiT forward is split (:class:`SequenceParallel`), so every
process holds the same latents after each step. Rank 0 alone writes the output; on resume it reads
the committed state and hands it to the others.

    session = start_session(ulysses_size=4, ring_size=1)   # reads torchrun's RANK/WORLD_SIZE/LOCAL_RANK
    session.attach(dit)                                     # dit.parallel = the strategy (checks heads)
    sink = session.output_sink(SegmentStore(...) if session.is_main else None)  # rank 0 writes
    ...
    session.close()
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ..errors import InfiniteTalkError, InputError
from .layout import SINGLE_PROCESS, SingleProcess
from .sequence import SequenceParallel, check_sizes

logger = logging.getLogger(__name__)


def torchrun_ranks(env: dict[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) without torchrun."""
    env = os.environ if env is None else env
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


def process_device(requested: str | None, world_size: int, local_rank: int) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` under torchrun on GPUs, else ``requested``."""
    device = torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))
    if world_size == 1 or device.type != "cuda":
        return device
    if device.index is not None:
        raise InputError(
            f"--device {requested}: under torchrun each process takes the GPU of its LOCAL_RANK; "
            "pass --device cuda (or leave it out) and choose GPUs with CUDA_VISIBLE_DEVICES"
        )
    visible = torch.cuda.device_count()
    if local_rank >= visible:
        raise InputError(
            f"torchrun started process LOCAL_RANK {local_rank} but only {visible} GPU(s) are visible: "
            f"lower --nproc_per_node to {visible} or check CUDA_VISIBLE_DEVICES"
        )
    return torch.device("cuda", local_rank)


@dataclass
class ParallelSession:
    """This process's place in the run; the single-process session (the default) does nothing."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    strategy: SequenceParallel | SingleProcess = SINGLE_PROCESS

    @property
    def is_main(self) -> bool:
        """True on the process that writes the output and reports progress (rank 0)."""
        return self.rank == 0

    def attach(self, dit: torch.nn.Module) -> None:
        """Give the DiT this session's strategy; ``InputError`` if its heads or backend do not fit."""
        self.strategy.check_model(dit.config.num_heads, dit.attention_backend)
        dit.parallel = self.strategy

    def check_heads(self, num_heads: int) -> None:
        """Check the DiT's attention heads against the split, early (before any weight is read: the
        command line passes :func:`infinitetalk.loading.dit.dit_heads` of the file)."""
        if self.world_size == 1:
            return
        check_sizes(self.strategy.ulysses_size, self.strategy.ring_size, self.world_size, num_heads)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every process (any picklable object)."""
        if self.world_size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def output_sink(self, sink, resumable: bool = True):
        """What the pipeline writes to: ``sink`` itself for one process; under torchrun a wrapper
        that writes through ``sink`` on rank 0 (pass None elsewhere) and shares its resume state."""
        if self.world_size == 1:
            return sink
        return RankZeroResumableSink(sink, self) if resumable else RankZeroSink(sink, self)

    def close(self) -> None:
        if self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def start_session(ulysses_size: int = 1, ring_size: int = 1, device: str | None = None) -> ParallelSession:
    """Join torchrun's process group (NCCL on CUDA, gloo on CPU) and build the sequence-parallel strategy.

    Without torchrun (one process) and sizes 1, returns the single-process session. Raises
    ``InputError`` (before anything is loaded) when the sizes do not match the processes.
    """
    rank, world, local_rank = torchrun_ranks()
    check_sizes(ulysses_size, ring_size, world)
    dev = process_device(device, world, local_rank)
    if world == 1:
        return ParallelSession(device=dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    strategy = SequenceParallel(ulysses_size, ring_size)
    logger.info(
        "process %d/%d on %s (%s): Ulysses %d x ring %d", rank, world, dev, backend, ulysses_size, ring_size
    )
    return ParallelSession(rank, world, dev, strategy)


class RankZeroSink:
    """Frames go to the real sink on rank 0 and nowhere on the other processes."""

    def __init__(self, sink, session: ParallelSession):
        self.sink, self.session = sink, session

    def write(self, frames: np.ndarray) -> None:
        if self.sink is not None:
            self.sink.write(frames)

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()


class RankZeroResumableSink(RankZeroSink):
    """A resumable sink on rank 0 whose resume state every process receives."""

    def begin(self, fingerprint: str, resume: bool) -> dict[str, Any] | None:
        message: tuple[str, Any] = ("ok", None)
        error = None
        if self.sink is not None:
            try:
                message = ("ok", self.sink.begin(fingerprint, resume))
            except InfiniteTalkError as err:  # tell the others, then raise it here too
                message, error = ("error", str(err)), err
        status, payload = self.session.broadcast(message)
        if error is not None:
            raise error
        if status == "error":
            raise InputError(f"rank 0 could not start the output: {payload}")
        return payload

    def commit(self, window: int, state: dict[str, Any]) -> None:
        if self.sink is not None:
            self.sink.commit(window, state)

    def mark_complete(self) -> None:
        if self.sink is not None:
            self.sink.mark_complete()
