"""Block swap: keep some transformer blocks' weights in host memory and stream them in.

The last ``num_swapped`` blocks of a ``ModuleList`` keep their weights on the CPU (pinned when
the compute device is CUDA). A forward pre-hook puts a block's weights on the compute device
just before the block runs and a forward hook puts the host copies back right after, so at most
two swapped blocks (the running one and the prefetched next one) occupy device memory.

Prefetch: when block ``i`` starts, the weights of block ``i + 1`` (if swapped) are copied on a
side CUDA stream; block ``i + 1`` waits for that copy with an event, so transfer overlaps compute.
The first swapped block is prefetched while the last resident block runs.

Weights are never written back: inference only, the host copy stays the master. On a CPU-only
machine (or ``device="cpu"``) every transfer is a no-op and outputs are bit-identical.

Usage::

    model = load_dit(..., device="cpu")
    swap = place_model(model, "cuda", blocks_to_swap=20)  # resident parts to CUDA, hooks installed
    out = model(...)
    swap.remove()                                          # hooks off, swapped blocks on CPU
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from .errors import InputError

log = logging.getLogger(__name__)


class BlockSwap:
    """Swap the last ``num_swapped`` modules of ``blocks`` between host memory and ``device``."""

    def __init__(self, blocks: nn.ModuleList, num_swapped: int, device: torch.device | str):
        if not 0 <= num_swapped <= len(blocks):
            raise InputError(
                f"blocks_to_swap={num_swapped} is out of range; the model has {len(blocks)} blocks (0..{len(blocks)})"
            )
        self.blocks = blocks
        self.device = torch.device(device)
        self.first_swapped = len(blocks) - num_swapped
        self._cuda = self.device.type == "cuda"
        self._stream = torch.cuda.Stream(self.device) if self._cuda else None
        self._host = {i: _to_host(blocks[i], pin=self._cuda) for i in self.swapped}
        self._pending: dict[int, tuple[dict, torch.cuda.Event | None]] = {}
        self._handles = []
        for i, block in enumerate(blocks):
            self._handles.append(block.register_forward_pre_hook(self._make_pre_hook(i)))
            if i in self._host:
                self._handles.append(block.register_forward_hook(self._make_post_hook(i)))

    @property
    def swapped(self) -> range:
        return range(self.first_swapped, len(self.blocks))

    # -- hooks --------------------------------------------------------------------------------
    def _make_pre_hook(self, i: int):
        def hook(_module, _args):
            if i in self._host:
                self._attach(i)
            if i + 1 in self._host and i + 1 not in self._pending:
                self._prefetch(i + 1)

        return hook

    def _make_post_hook(self, i: int):
        def hook(_module, _args, _output):
            _assign(self.blocks[i], self._host[i])

        return hook

    # -- transfers ----------------------------------------------------------------------------
    def _prefetch(self, i: int) -> None:
        """Start copying block ``i``'s weights to the device (side stream when CUDA)."""
        if not self._cuda:
            self._pending[i] = (self._host[i], None)
            return
        self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._stream):
            on_device = {k: _copy_to(t, self.device) for k, t in self._host[i].items()}
            event = torch.cuda.Event()
            event.record(self._stream)
        self._pending[i] = (on_device, event)

    def _attach(self, i: int) -> None:
        """Make block ``i`` use device weights (waiting for its prefetch if one is in flight)."""
        if i not in self._pending:
            self._prefetch(i)
        on_device, event = self._pending.pop(i)
        if event is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            for t in on_device.values():
                _record_stream(t, current)  # allocated on the side stream, used on this one
        _assign(self.blocks[i], on_device)

    def remove(self) -> None:
        """Remove the hooks; swapped blocks keep their host weights."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for i, tensors in self._host.items():
            _assign(self.blocks[i], tensors)
        self._pending.clear()


def place_model(model: nn.Module, device: torch.device | str, blocks_to_swap: int) -> BlockSwap:
    """Move ``model`` to ``device`` except its last ``blocks_to_swap`` blocks, and install swapping.

    The block list is ``getattr(model, model.swappable_blocks)`` (``model.blocks`` by default).
    Swapped blocks are moved to the CPU first, so the model never has to fit on the device whole.
    """
    blocks = getattr(model, getattr(model, "swappable_blocks", "blocks"))
    device = torch.device(device)
    resident = set(range(len(blocks) - blocks_to_swap))
    for i, block in enumerate(blocks):
        block.to(device if i in resident else torch.device("cpu"))
    for child in model.children():
        if child is not blocks:
            child.to(device)
    for name, p in model.named_parameters(recurse=False):
        model._parameters[name] = nn.Parameter(p.to(device), requires_grad=p.requires_grad)
    log.info(
        "block swap: %d of %d blocks stay on the CPU, the rest on %s", blocks_to_swap, len(blocks), device
    )
    return BlockSwap(blocks, blocks_to_swap, device)


# --------------------------------------------------------------------------------------------
# Tensor bookkeeping: "name" is "<module path>:<param|buffer>:<attr>" inside one block
# --------------------------------------------------------------------------------------------


def _to_host(block: nn.Module, pin: bool) -> dict[str, torch.Tensor]:
    """Move the block's parameters and buffers to (pinned) CPU memory; return them by name."""
    tensors = {}
    for mod_name, module in block.named_modules():
        for kind in ("_parameters", "_buffers"):
            for attr, t in getattr(module, kind).items():
                if t is None:
                    continue
                host = _pinned(t.detach().to("cpu"), pin)
                host = nn.Parameter(host, requires_grad=False) if kind == "_parameters" else host
                getattr(module, kind)[attr] = host
                tensors[f"{mod_name}:{kind}:{attr}"] = host
    return tensors


def _pinned(t: torch.Tensor, pin: bool) -> torch.Tensor:
    if not pin:
        return t
    try:
        return t.pin_memory()
    except (RuntimeError, NotImplementedError) as exc:  # e.g. quantised tensor subclasses
        log.debug("block swap: cannot pin a %s (%s); using pageable memory", type(t).__name__, exc)
        return t


def _copy_to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    moved = t.to(device, non_blocking=True)
    return nn.Parameter(moved, requires_grad=False) if isinstance(t, nn.Parameter) else moved


def _record_stream(t: torch.Tensor, stream) -> None:
    """``record_stream`` on a tensor, or on the inner tensors of a subclass (quanto QTensor)."""
    flatten = getattr(t, "__tensor_flatten__", None)
    if type(t) in (torch.Tensor, nn.Parameter) or flatten is None:
        t.record_stream(stream)
        return
    for name in flatten()[0]:
        _record_stream(getattr(t, name), stream)


def _assign(block: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    modules = dict(block.named_modules())
    for name, t in tensors.items():
        mod_name, kind, attr = name.split(":")
        getattr(modules[mod_name], kind)[attr] = t
