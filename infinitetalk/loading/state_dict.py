"""Lazy, safe checkpoint reading.

:func:`open_checkpoint` returns a :class:`CheckpointReader`: the key names, shapes and storage
dtypes of a checkpoint without reading any tensor data, and ``get(key, device, dtype)`` that
reads one tensor at a time. Peak host memory while loading a model is therefore about the size
of the tensors kept, not twice the file.

Formats:

- one ``.safetensors`` file (parsed here: header check, then one ``readinto`` per tensor, so a
  truncated or corrupt file is refused before anything is read);
- a sharded folder or its ``*.safetensors.index.json`` / ``*.bin.index.json`` (``weight_map``);
- ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` through ``torch.load(weights_only=True)`` (memory-mapped
  when the file is in the zip format). Nothing is ever unpickled unsafely;
- ``.gguf`` (:mod:`infinitetalk.gguf_read`, memory-mapped): ``get`` dequantises, ``get_stored`` keeps a
  quantised tensor's blocks (:class:`~infinitetalk.gguf_tensor.GGUFWeight`); ``qtype(key)`` names its type.

Key handling:

- a prefix carried by every key (``model.diffusion_model.``, ``diffusion_model.``, ``model.``,
  ``module.``, or one found from an ``anchor`` key the caller expects) is stripped;
- fp8 storage (``float8_e4m3fn``, ``float8_e5m2``) is dequantised on ``get``;
- "scaled fp8" files (Kijai ``*_scaled_KJ``, ComfyUI ``*_fp8_scaled``) store per-weight
  ``<module>.scale_weight`` (or ``.weight_scale``) scalars, and ComfyUI adds a ``scaled_fp8`` marker
  and ``.scale_input`` keys: ``get`` returns ``weight.float() * scale`` cast to the asked dtype, and
  none of those helper keys is listed by ``keys()``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..gguf_read import GGUFFile

log = logging.getLogger(__name__)

DEFAULT_PREFIXES: tuple[str, ...] = ("model.diffusion_model.", "diffusion_model.", "module.", "model.")
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)

# Keys that describe quantisation, never model parameters.
_MARKER_KEYS = frozenset({"scaled_fp8"})
_HELPER_SUFFIXES = (".scale_weight", ".weight_scale", ".scale_input", ".input_scale", ".comfy_quant")
_UNSUPPORTED_SUFFIXES = (".weight_scale_2",)  # ComfyUI NVFP4 two-level scales

_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_MAX_HEADER = 100 * 1024 * 1024


# --------------------------------------------------------------------------------------------
# Sources: raw key -> tensor, one file (or one loaded pickle) each
# --------------------------------------------------------------------------------------------


class _SafetensorsFile:
    """One ``.safetensors`` file read with ``readinto`` (no mmap: RSS grows only by what is kept)."""

    def __init__(self, path: Path):
        self.path = path
        self.entries, self.data_start = _parse_safetensors_header(path)
        self._fh = None

    def keys(self) -> list[str]:
        return list(self.entries)

    def shape(self, key: str) -> torch.Size:
        return torch.Size(self.entries[key][1])

    def dtype(self, key: str) -> torch.dtype:
        return self.entries[key][0]

    def read(self, key: str, scratch: torch.Tensor | None = None) -> torch.Tensor:
        """Read ``key``; into ``scratch`` (a uint8 buffer, reused by the caller) when given."""
        dtype, shape, (start, end) = self.entries[key]
        buf = torch.empty(end - start, dtype=torch.uint8) if scratch is None else scratch[: end - start]
        if end > start:
            fh = self._handle()
            fh.seek(self.data_start + start)
            got = fh.readinto(memoryview(buf.numpy()))
            if got != end - start:
                raise CheckpointError(
                    f"{self.path}: truncated while reading '{key}' ({got} of {end - start} bytes); "
                    "download the file again"
                )
        return buf.view(dtype).reshape(shape)

    def nbytes(self, key: str) -> int:
        start, end = self.entries[key][2]
        return end - start

    def _handle(self):
        if self._fh is None:
            self._fh = open(self.path, "rb")  # noqa: SIM115 - kept open across reads, closed in close()
        return self._fh

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _parse_safetensors_header(path: Path) -> tuple[dict, int]:
    """Return ``({key: (dtype, shape, (start, end))}, data_start)`` after checking sizes."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: file too small to be a safetensors checkpoint ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n == 0 or n > _MAX_HEADER or 8 + n > size:
            raise CheckpointError(
                f"{path}: not a valid safetensors file (header length {n}, file size {size}); "
                "the file is truncated or not a safetensors checkpoint"
            )
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(
                f"{path}: corrupt safetensors header ({exc}); download the file again"
            ) from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    header.pop("__metadata__", None)
    entries, data_end = {}, 0
    for key, info in header.items():
        entries[key] = _header_entry(path, key, info)
        data_end = max(data_end, entries[key][2][1])
    if 8 + n + data_end != size:
        what = "truncated" if 8 + n + data_end > size else "has trailing bytes (corrupt)"
        raise CheckpointError(
            f"{path}: file {what}: header describes {8 + n + data_end} bytes but the file has {size}; "
            "download the file again"
        )
    return entries, 8 + n


def _header_entry(path: Path, key: str, info) -> tuple[torch.dtype, tuple[int, ...], tuple[int, int]]:
    try:
        dtype = _ST_DTYPES[info["dtype"]]
        shape = tuple(int(d) for d in info["shape"])
        start, end = (int(o) for o in info["data_offsets"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: unsupported or corrupt safetensors entry '{key}': {info!r}") from exc
    if end - start != math.prod(shape) * dtype.itemsize or start < 0:
        raise CheckpointError(
            f"{path}: corrupt safetensors entry '{key}' (size does not match shape {shape})"
        )
    return dtype, shape, (start, end)


class _MemoryTensors:
    """Tensors already in memory (another host's loaded model): the same interface as a file source."""

    def __init__(self, tensors):
        self.tensors = {k: v for k, v in tensors.items() if isinstance(v, torch.Tensor)}

    def keys(self) -> list[str]:
        return list(self.tensors)

    def shape(self, key: str) -> torch.Size:
        return self.tensors[key].shape

    def dtype(self, key: str) -> torch.dtype:
        return self.tensors[key].dtype

    def read(self, key: str, scratch: torch.Tensor | None = None) -> torch.Tensor:
        return self.tensors[key].detach()

    def nbytes(self, key: str) -> int:
        return 0

    def close(self) -> None:
        """Nothing to release: the tensors belong to the host that loaded them (the reader can be reused)."""


class _TorchFile(_MemoryTensors):
    """A ``.pth``/``.pt``/``.bin`` state dict loaded with ``weights_only=True`` (mmap when possible): its
    tensors are already in memory (mapped), read as they are, no scratch buffer needed."""

    def __init__(self, path: Path):
        self.path = path
        obj = _torch_load(path)
        self.tensors = _flatten_state_dict(path, obj)

    def close(self) -> None:
        self.tensors = {}


SAFE_TORCH = (2, 6)  # before 2.6, torch.load(weights_only=True) can be bypassed (CVE-2025-32434)


def check_safe_torch(path: Path, version: str = torch.__version__) -> None:
    """Refuse to unpickle ``path`` on a torch whose ``weights_only`` loading can be bypassed."""
    major, minor = (int("".join(ch for ch in part if ch.isdigit()) or 0) for part in version.split(".")[:2])
    if (major, minor) < SAFE_TORCH:
        raise CheckpointError(
            f"{path.name}: torch {version} cannot load .pth/.pt files safely (weights_only loading can be "
            "bypassed before torch 2.6): upgrade torch to 2.6 or newer, or use the .safetensors version"
        )


def _torch_load(path: Path, mmap: bool | None = None):
    check_safe_torch(path)
    if mmap is None:
        mmap = zipfile.is_zipfile(path)  # only the zip serialisation can be memory-mapped
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # unpickling/zip/EOF errors: one clear line, never a traceback
        text = str(exc)
        if "GLOBAL" in text or "Unsupported global" in text:
            raise CheckpointError(
                f"{path}: holds Python objects other than tensors and is refused (safe loading only); "
                "convert it to .safetensors"
            ) from None
        raise CheckpointError(
            f"{path}: unreadable PyTorch checkpoint ({type(exc).__name__}: {_short_reason(text)}); "
            "the file is truncated or not a checkpoint, download it again"
        ) from None


def _short_reason(text: str) -> str:
    """The informative line of a torch.load error (the weights-only preamble is boilerplate)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    picked = next(
        (ln for ln in lines if ln.startswith(("Unsupported", "PytorchStreamReader"))),
        lines[0] if lines else "",
    )
    return picked.split(". ")[0][:160]


def _flatten_state_dict(path: Path, obj) -> dict[str, torch.Tensor]:
    """Unwrap ``{"state_dict": ...}``-style containers and keep tensors only."""
    for wrapper in ("state_dict", "model", "module", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict) and len(obj) <= 4:
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), found {type(obj).__name__}")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: contains no tensors; this is not a model checkpoint")
    return tensors


# --------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------


class CheckpointReader:
    """Lazy view of a checkpoint: stripped key names, shapes, dtypes, and ``get`` one at a time.

    ``keys()`` lists model tensors only (quantisation helper keys are hidden). ``dtype(key)`` is
    the *storage* dtype (e.g. ``float8_e4m3fn``); ``get`` dequantises.
    """

    def __init__(self, path: Path, sources: dict[str, object], prefix: str = ""):
        self.path = path
        self._sources = sources  # raw key -> source
        self.prefix = prefix
        self._raw: dict[str, str] = {}
        self._helpers: dict[str, str] = {}
        self._scratch: torch.Tensor | None = None
        for raw in sources:
            name = raw[len(prefix) :] if raw.startswith(prefix) else raw
            if name in _MARKER_KEYS or name.endswith(_HELPER_SUFFIXES):
                self._helpers[name] = raw
            elif name.endswith(_UNSUPPORTED_SUFFIXES):
                raise CheckpointError(
                    f"{path}: two-level scaled (NVFP4-style) weights are not supported; use an fp16, bf16, "
                    "fp8_e4m3fn or fp8 scaled file"
                )
            else:
                self._raw[name] = raw

    # -- listing ------------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return list(self._raw)

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, key: object) -> bool:
        return key in self._raw

    def shape(self, key: str) -> torch.Size:
        raw = self._raw[key]
        return self._sources[raw].shape(raw)

    def dtype(self, key: str) -> torch.dtype:
        raw = self._raw[key]
        return self._sources[raw].dtype(raw)

    def shapes(self) -> dict[str, torch.Size]:
        return {k: self.shape(k) for k in self._raw}

    @property
    def is_scaled(self) -> bool:
        """True when the file carries per-weight fp8 scales."""
        return any(k.endswith((".scale_weight", ".weight_scale")) for k in self._helpers)

    def scale_key(self, key: str) -> str | None:
        """The helper key holding the dequantisation scale of ``key``, if any."""
        if not key.endswith(".weight"):
            return None
        stem = key[: -len("weight")]
        for suffix in ("scale_weight", "weight_scale"):
            if stem + suffix in self._helpers:
                return stem + suffix
        return None

    # -- reading ------------------------------------------------------------------------------
    def get(
        self, key: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Read ``key`` onto ``device`` as ``dtype`` (default: storage dtype, float32 for fp8).

        fp8 values are widened to float32, multiplied by the weight's scale when there is one,
        and then cast: ``(w.float() * scale).to(dtype)``.
        """
        if key not in self._raw:
            raise KeyError(f"{self.path}: no tensor named '{key}'")
        raw = self._raw[key]
        source = self._sources[raw]
        storage = source.dtype(raw)
        scale_key = self.scale_key(key)
        needs_math = storage in FP8_DTYPES or scale_key is not None
        if dtype is None:
            dtype = torch.float32 if needs_math else storage
        kept_as_read = not needs_math and dtype == storage and torch.device(device).type == "cpu"
        # A tensor that is converted or moved is read into one reused buffer: the transient copies
        # would otherwise fragment the heap and raise peak RSS well above the kept size.
        t = source.read(raw, None if kept_as_read else self._scratch_for(source.nbytes(raw)))
        if not needs_math:
            return _move(t, device, dtype)
        t = t.to(device).float()
        if scale_key is not None:
            t.mul_(_broadcast_scale(self._read_helper(scale_key).to(device).float(), t, self.path, key))
        return t.to(dtype)

    def qtype(self, key: str) -> str | None:
        """The GGUF type of ``key`` (``Q4_K``, ``F16`` ...), None for other formats."""
        raw = self._raw[key]
        source = self._sources[raw]
        return source.qtype(raw) if hasattr(source, "qtype") else None

    def stored_nbytes(self, key: str) -> int:
        """Bytes ``key`` takes as stored in the file (0 for tensors already in memory)."""
        raw = self._raw[key]
        return self._sources[raw].nbytes(raw)

    def get_stored(
        self, key: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Like :meth:`get`, but a quantised GGUF tensor stays quantised (its blocks, moved to ``device``)."""
        raw = self._raw.get(key)
        source = self._sources.get(raw)
        if raw is None or not getattr(source, "is_quantized", lambda _k: False)(raw):
            return self.get(key, device, dtype)
        return source.read_stored(raw).to(device)

    def _scratch_for(self, nbytes: int) -> torch.Tensor | None:
        if nbytes == 0:
            return None
        if self._scratch is None or self._scratch.numel() < nbytes:
            self._scratch = None
            self._scratch = torch.empty(nbytes, dtype=torch.uint8)
        return self._scratch

    def _read_helper(self, name: str) -> torch.Tensor:
        raw = self._helpers[name]
        return self._sources[raw].read(raw)

    def close(self) -> None:
        self._scratch = None
        for src in {id(s): s for s in self._sources.values()}.values():
            src.close()

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CheckpointReader({str(self.path)!r}, {len(self)} tensors, prefix={self.prefix!r})"


def _move(t: torch.Tensor, device, dtype: torch.dtype) -> torch.Tensor:
    """Cast on the side where the tensor is smaller, so transfers and copies stay small."""
    if t.dtype.itemsize > dtype.itemsize:
        return t.to(dtype).to(device)
    return t.to(device).to(dtype)


def _broadcast_scale(scale: torch.Tensor, weight: torch.Tensor, path: Path, key: str) -> torch.Tensor:
    if scale.numel() == 1:
        return scale.reshape(())
    if scale.numel() == weight.shape[0]:  # per output channel
        return scale.reshape(weight.shape[0], *([1] * (weight.dim() - 1)))
    raise CheckpointError(
        f"{path}: scale of '{key}' has shape {tuple(scale.shape)}, which does not fit weight "
        f"{tuple(weight.shape)}; only per-tensor or per-output-channel fp8 scales are supported"
    )


# --------------------------------------------------------------------------------------------
# Opening
# --------------------------------------------------------------------------------------------


def open_checkpoint(
    path: str | os.PathLike | CheckpointReader,
    prefixes: Sequence[str] = DEFAULT_PREFIXES,
    anchor: str | None = None,
) -> CheckpointReader:
    """Open a checkpoint lazily.

    Args:
        path: a ``.safetensors``/``.pth``/``.pt``/``.bin`` file, a sharded folder, or an
            ``*.index.json``; or an open :class:`CheckpointReader` (e.g. :func:`reader_from_tensors` over a
            model another host loaded), returned as it is, so every loader taking a path takes it too.
        prefixes: prefixes stripped when *every* key carries one (tried repeatedly, so
            ``module.model.diffusion_model.`` goes too).
        anchor: a key the caller expects (e.g. ``"patch_embedding.weight"``). When it is absent
            but exactly one key ends with ``"." + anchor``, the part before it is taken as the
            prefix of the file and stripped from every key that carries it.

    Raises:
        CheckpointError: missing/unknown/truncated/corrupt file or missing shard (one line).
    """
    if isinstance(path, CheckpointReader):
        return path
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: file not found; check the path or download the checkpoint")
    sources = _open_sources(path)
    prefix = _detect_prefix(list(sources), prefixes, anchor)
    if prefix:
        log.debug("%s: stripping key prefix %r", path, prefix)
    return CheckpointReader(path, sources, prefix)


def reader_from_tensors(
    name: str, tensors, prefixes: Sequence[str] = DEFAULT_PREFIXES, anchor: str | None = None
) -> CheckpointReader:
    """A :class:`CheckpointReader` over tensors already in memory (e.g. a model another node loaded).

    ``name`` stands for the path in messages (say where the tensors came from). Keys are handled as for
    a file: common prefixes stripped, fp8 scale helpers hidden and applied on ``get``.
    """
    source = _MemoryTensors(tensors)
    if not source.tensors:
        raise CheckpointError(f"{name}: holds no tensors; connect a loaded model")
    sources = _by_key(source)
    return CheckpointReader(Path(name), sources, _detect_prefix(list(sources), prefixes, anchor))


def _open_sources(path: Path) -> dict[str, object]:
    if path.is_dir():
        return _open_folder(path)
    name = path.name.lower()
    if name.endswith(".index.json"):
        return _open_index(path)
    if name.endswith(SAFETENSORS_SUFFIXES):
        return _by_key(_SafetensorsFile(path))
    if name.endswith(TORCH_SUFFIXES):
        return _by_key(_TorchFile(path))
    if name.endswith(".gguf"):
        return _by_key(_gguf_file(path))
    return _by_key(_sniff(path))


def _gguf_file(path: Path) -> GGUFFile:
    return GGUFFile(path)


def _by_key(source) -> dict[str, object]:
    return {k: source for k in source.keys()}


def _sniff(path: Path):
    """Unknown extension: recognise the format from the first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if head[:4] == b"PK\x03\x04":
        return _TorchFile(path)
    if head[:4] == b"GGUF":
        return _gguf_file(path)
    if len(head) == 9 and head[8:9] == b"{":
        return _SafetensorsFile(path)
    raise CheckpointError(
        f"{path}: unknown file format (expected .safetensors, .pth/.pt/.bin, or a sharded folder with an index json)"
    )


def _open_folder(folder: Path) -> dict[str, object]:
    indexes = sorted(folder.glob("*.safetensors.index.json")) + sorted(folder.glob("*.bin.index.json"))
    preferred = [p for p in indexes if p.name.startswith("diffusion_pytorch_model")]
    if preferred or len(indexes) == 1:
        return _open_index((preferred or indexes)[0])
    if len(indexes) > 1:
        raise CheckpointError(
            f"{folder}: several index files ({', '.join(p.name for p in indexes)}); pass one of them"
        )
    files = sorted(p for p in folder.iterdir() if p.name.lower().endswith(SAFETENSORS_SUFFIXES))
    if len(files) == 1:
        return _by_key(_SafetensorsFile(files[0]))
    what = (
        "no .safetensors file or index json"
        if not files
        else f"{len(files)} .safetensors files but no index json"
    )
    raise CheckpointError(f"{folder}: folder has {what}; pass the checkpoint file itself")


def _open_index(index: Path) -> dict[str, object]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{index}: not a valid sharded-checkpoint index (no 'weight_map'): {exc}"
        ) from None
    shard_names = sorted(set(weight_map.values()))
    missing = [s for s in shard_names if not (index.parent / s).is_file()]
    if missing:
        raise CheckpointError(
            f"{index}: missing shard(s) {', '.join(missing)} in {index.parent}; download every shard listed in the index"
        )
    shards = {name: _open_shard(index.parent / name) for name in shard_names}
    sources = {}
    for key, shard in weight_map.items():
        if key not in shards[shard].keys():
            raise CheckpointError(f"{index}: index lists '{key}' in {shard} but the shard does not hold it")
        sources[key] = shards[shard]
    return sources


def _open_shard(path: Path):
    if path.name.lower().endswith(SAFETENSORS_SUFFIXES):
        return _SafetensorsFile(path)
    return _TorchFile(path)


# --------------------------------------------------------------------------------------------
# Prefixes
# --------------------------------------------------------------------------------------------


def _detect_prefix(raw_keys: list[str], prefixes: Sequence[str], anchor: str | None) -> str:
    keys = [k for k in raw_keys if k not in _MARKER_KEYS]
    if not keys:
        return ""
    if anchor is not None and anchor not in keys:
        found = [k for k in keys if k.endswith("." + anchor)]
        if len(found) == 1:
            return found[0][: -len(anchor)]
    prefix = ""
    changed = True
    while changed:
        changed = False
        for p in prefixes:
            if all(k.startswith(prefix + p) for k in keys):
                prefix += p
                changed = True
                break
    return prefix


def common_prefix(keys: Iterable[str]) -> str:
    """The longest dotted prefix (ending with ``.``) shared by every key, or ``""``."""
    keys = list(keys)
    if not keys:
        return ""
    parts = [k.split(".")[:-1] for k in keys]
    common = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return "".join(c + "." for c in common)


def safe_torch_load(path: str | os.PathLike, mmap: bool | None = None):
    """``torch.load(path, weights_only=True)`` on the CPU (memory-mapped when possible, or as ``mmap`` says:
    a file that will be deleted or replaced must not stay mapped on Windows); anything that is not plain
    tensors and containers is refused, and every failure is one ``CheckpointError`` line."""
    return _torch_load(Path(path), mmap)
