"""Quantisation (optimum-quanto int8 / fp8 weights) on the tiny DiT, on CPU; block swap on fake CUDA tensors
(``FakeTensorMode``), where a block running with its weights on the wrong device fails as on a GPU."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from infinitetalk.errors import InputError
from infinitetalk.loading.dit import load_dit
from infinitetalk.offload import BlockSwap, place_model
from infinitetalk.quant import quantize_dit, quantized_modules, weight_bytes
from infinitetalk.tiny.dit import TINY_DIT

DIT = "models/diffusion_models/wan2.1_i2v_480p_14B_infinitetalk_single_merged_fp16.safetensors"


@pytest.fixture()
def model(tiny_dit_root):
    return load_dit(tiny_dit_root / DIT, dtype=torch.float32)


def inputs(seed: int = 0, frames: int = 5, hw=(4, 6)):
    """One window of 2 latent frames (5 video frames), one speaker."""
    g = torch.Generator().manual_seed(seed)
    t_lat = (frames - 1) // 4 + 1
    return dict(
        x=torch.randn(1, 16, t_lat, *hw, generator=g),
        t=torch.tensor([500.0]),
        context=torch.randn(1, 7, TINY_DIT.text_dim, generator=g),
        clip_fea=torch.randn(1, 257, TINY_DIT.clip_dim, generator=g),
        y=torch.randn(1, 20, t_lat, *hw, generator=g),
        audio=torch.randn(1, 1, frames, 5, TINY_DIT.audio_blocks, TINY_DIT.audio_channels, generator=g),
    )


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


# --------------------------------------------------------------------------------------------
# quantisation
# --------------------------------------------------------------------------------------------


def test_quantize_skips_high_precision_modules(model):
    quantize_dit(model, "int8")
    names = quantized_modules(model)
    assert len(names) == TINY_DIT.num_layers * 15  # q,k,v,o + 6 cross + 2 ffn + 3 audio per block
    assert all(n.startswith("blocks.") for n in names)
    assert not any(("norm" in n or "modulation" in n) for n in names)
    kept = ("patch_embedding", "text_embedding.0", "time_embedding.0", "time_projection.1", "img_emb.proj.1",
            "audio_proj.proj1", "head.head")  # fmt: skip
    assert not set(kept) & set(names)


@pytest.mark.parametrize(("mode", "tol"), [("int8", 0.03), ("fp8", 0.08)])
def test_quantized_output_close_to_fp32(model, mode, tol):
    """Per-channel int8 keeps ~7 bits, float8 e4m3 ~3 mantissa bits: relative L2 error of the
    prediction below 3 % (int8) / 8 % (fp8) on random weights (measured 0.7 % / 2.6 % over 3 seeds)."""
    args = inputs()
    block_linear = sum(m.weight.numel() for m in model.blocks.modules() if isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        ref = model(**args)
        before = weight_bytes(model)
        quantize_dit(model, mode)
        out = model(**args)
    err = rel_err(out, ref)
    assert 0 < err < tol, err  # > 0: the weights really changed
    # block linear weights now take 1 byte instead of 4 (plus one fp32 scale per output channel)
    assert before - weight_bytes(model) > 0.97 * 3 * block_linear


def test_unknown_quant_mode(model):
    with pytest.raises(InputError, match="quantization 'int4' is not supported; choose one of int8, fp8"):
        quantize_dit(model, "int4")


# --------------------------------------------------------------------------------------------
# block swap
# --------------------------------------------------------------------------------------------


def test_block_swap_moves_weights_in_and_out():
    """On the CPU the transfers are no-ops; the prefetch bookkeeping still runs in order."""
    blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(3)])
    swap = BlockSwap(blocks, 2, "cpu")
    seen = []
    for i, b in enumerate(blocks):
        b.register_forward_hook(lambda m, a, o, i=i: seen.append((i, sorted(swap._pending))))
    x = torch.randn(2, 4)
    for b in blocks:
        x = b(x)
    # block 1's weights are prefetched while block 0 runs; block 2's while block 1 runs
    assert seen == [(0, [1]), (1, [2]), (2, [])]
    assert all(p.device.type == "cpu" for p in blocks.parameters())


def test_block_swap_rejects_bad_count():
    blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2)])
    with pytest.raises(InputError, match="blocks_to_swap=2 is out of range; the model has 1 blocks"):
        BlockSwap(blocks, 2, "cpu")


# --------------------------------------------------------------------------------------------
# block swap on (fake) CUDA: placement and transfer order on a device that differs from the host
# --------------------------------------------------------------------------------------------


class _FakeCudaStreams:
    """``torch.cuda`` streams and events for fake mode (which has tensors, not streams): records their use.

    ``log`` gets ``("copy", block, stream)`` from the swap's host -> device copies, ``("wait", block)`` when
    the compute stream waits for the event recorded after block's copies, and ``("run", block)`` from a
    hook that runs right before each block computes."""

    def __init__(self, monkeypatch, swap_module):
        self.log: list[tuple] = []
        self.recorded: list[tuple[int, str]] = []  # (id(tensor), stream) from Tensor.record_stream
        self.compute = self.current = _Stream("compute", self)
        streams = self

        class Event:
            def __init__(self):
                self.block = None

            def record(self, stream):
                assert stream.name == "side", "the copy's event is recorded on the side stream"
                self.block = streams.copying

        self.copying = None
        self.copy_of: dict[int, int] = {}  # id(device copy) -> its block
        real_copy = swap_module._copy_to
        block_of = {}

        def copy_to(t, device):  # spy: the swap's own copy, logged with the stream it runs on
            self.copying = block_of[id(t)]
            self.log.append(("copy", block_of[id(t)], self.current.name))
            out = real_copy(t, device)
            self.copy_of[id(out)] = block_of[id(t)]
            return out

        def stream_ctx(stream):
            return _StreamContext(streams, stream)

        monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: _Stream("side", self))
        monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: self.current)
        monkeypatch.setattr(torch.cuda, "stream", stream_ctx)
        monkeypatch.setattr(torch.cuda, "Event", Event)
        monkeypatch.setattr(swap_module, "_copy_to", copy_to)
        monkeypatch.setattr(
            torch.Tensor, "record_stream", lambda t, s: self.recorded.append((id(t), s.name)), raising=False
        )
        self.pinned = 0  # fake tensors have no memory to pin: count the requests, keep the tensor
        monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t, *a, **k: self._pin(t))
        self.block_of = block_of

    def _pin(self, t):
        self.pinned += 1
        return t

    def watch(self, swap) -> None:
        """Map the host copies to their blocks, and log each block's start (after the swap's own hook)."""
        self.swap = swap
        for i, tensors in swap._host.items():
            for t in tensors.values():
                self.block_of[id(t)] = i
        for i, block in enumerate(swap.blocks):
            block.register_forward_pre_hook(lambda m, a, i=i: self.log.append(("run", i, *self._state(m))))

    def _state(self, block) -> tuple[set[str], set, set[int]]:
        """The devices of a block's tensors, whose copies its parameters are ("resident": none), and which
        swapped blocks hold device weights now."""
        owners = {self.copy_of.get(id(p), "resident") for p in block.parameters()}
        on_device = {j for j in self.swap.swapped if "cuda" in _devices(self.swap.blocks[j])}
        return _devices(block), owners, on_device


class _Stream:
    def __init__(self, name, streams):
        self.name, self.streams = name, streams

    def wait_stream(self, other):
        assert (self.name, other.name) == ("side", "compute"), "the side stream waits for compute"

    def wait_event(self, event):
        self.streams.log.append(("wait", event.block, self.name))


class _StreamContext:
    def __init__(self, streams, stream):
        self.streams, self.stream = streams, stream

    def __enter__(self):
        self.before, self.streams.current = self.streams.current, self.stream

    def __exit__(self, *exc):
        self.streams.current = self.before


def _fake_like(t: torch.Tensor, mode) -> torch.Tensor:
    """A fresh fake tensor (no data) of ``t``'s shape, dtype and device; quantised subclasses keep their type
    with fake inner tensors."""
    if type(t) not in (torch.Tensor, torch.nn.Parameter) and hasattr(t, "__tensor_flatten__"):
        names, meta = t.__tensor_flatten__()
        inner = {n: _fake_like(getattr(t, n), mode) for n in names}
        return type(t).__tensor_unflatten__(inner, meta, t.size(), t.stride())
    with mode:
        return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)


def _to_fake_host(model: torch.nn.Module, mode) -> None:
    """Every parameter and buffer -> a fake tensor on the host, as the model stands after loading."""
    for sub in model.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None:
                fake = _fake_like(p.detach(), mode)
                sub._parameters[name] = (
                    fake if type(fake) is not torch.Tensor else torch.nn.Parameter(fake, False)
                )
        for name, b in list(sub._buffers.items()):
            if b is not None:
                sub._buffers[name] = _fake_like(b, mode)


def _inner(t: torch.Tensor) -> list[str]:
    """The plain tensors inside ``t``: itself, or a quantised tensor's data and scale."""
    if type(t) in (torch.Tensor, torch.nn.Parameter) or not hasattr(t, "__tensor_flatten__"):
        return ["self"]
    return t.__tensor_flatten__()[0]


def _devices(module) -> set[str]:
    return {t.device.type for t in [*module.parameters(), *module.buffers()]}


def _expected_swap_log(num_blocks: int, first: int) -> list[tuple]:
    """Block i+1's copies start (side stream) when block i starts; block i waits for its own copies, then
    runs on cuda with its own weights (copies of its host tensors; resident blocks: their own), the only
    swapped block holding device weights (the prefetched next one is pending, not attached)."""
    log = []
    for i in range(num_blocks):
        if i == first == 0:  # nothing ran before the first swapped block: it is fetched when it starts
            log.append(("copy", 0, "side"))
        if i >= first:
            log.append(("wait", i, "compute"))
        if i + 1 < num_blocks and i + 1 >= first:
            log.append(("copy", i + 1, "side"))
        swapped = i >= first
        log.append(("run", i, {"cuda"}, {i} if swapped else {"resident"}, {i} if swapped else set()))
    return log


@pytest.mark.parametrize("quantised", [False, True], ids=["fp32", "int8"])
@pytest.mark.parametrize("swapped", [1, TINY_DIT.num_layers])  # the last block; all blocks
def test_block_swap_on_fake_cuda_fetches_each_block_before_it_runs(model, monkeypatch, swapped, quantised):
    """The resident blocks live on cuda, the swapped ones on the host; a forward on cuda inputs only works
    if every swapped block's weights reach cuda before it computes (fake mode raises on a device mix, as a
    GPU does). Checked: the copy order (block i+1 copied on the side stream when block i starts), each
    block waits for its own copies, at most one swapped block is on cuda between blocks, all go back."""
    from torch._subclasses.fake_tensor import FakeTensorDeviceMismatchError, FakeTensorMode

    from infinitetalk import offload

    if quantised:
        quantize_dit(model, "int8")
    streams = _FakeCudaStreams(monkeypatch, offload)
    mode = FakeTensorMode()
    _to_fake_host(model, mode)
    # Module.to() swaps fake parameters in place (torch.utils.swap_tensors), which refuses tensors that have
    # weak references; FakeTensorMode's own memo holds some. Nothing here relies on them: skip that check.
    monkeypatch.setattr(torch.utils, "weakref", SimpleNamespace(getweakrefs=lambda t: []))
    with mode:
        swap = place_model(model, "cuda", blocks_to_swap=swapped)
    streams.watch(swap)
    first = TINY_DIT.num_layers - swapped
    with mode, torch.no_grad():
        args = {k: torch.empty(v.shape, device="cuda") for k, v in inputs(1).items()}
        for _ in range(2):  # the second forward repeats the first (nothing left pending)
            streams.log.clear()
            out = model(**args)
            assert out.device.type == "cuda" and out.shape == args["x"].shape
            collapsed = [e for k, e in enumerate(streams.log) if k == 0 or e != streams.log[k - 1]]
            assert collapsed == _expected_swap_log(TINY_DIT.num_layers, first)
            copies = Counter(e[1] for e in streams.log if e[0] == "copy")  # every host tensor, once
            assert copies == {i: len(swap._host[i]) for i in swap.swapped}
            assert [_devices(b) for b in model.blocks] == [{"cuda"}] * first + [{"cpu"}] * swapped
            assert swap._pending == {}
    host = [t for tensors in swap._host.values() for t in tensors.values()]
    assert streams.pinned == len(host)  # every host copy is pinned (cuda)
    # each device copy is marked as used on the compute stream (a quantised one: each inner tensor)
    assert len(streams.recorded) == 2 * sum(len(_inner(t)) for t in host)
    assert {stream for _, stream in streams.recorded} == {"compute"}
    swap.remove()
    with mode, torch.no_grad(), pytest.raises(FakeTensorDeviceMismatchError):
        model(**args)  # without the swap, the host blocks cannot run on cuda inputs
