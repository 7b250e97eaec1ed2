"""The SentencePiece tokenizer of a umT5 GGUF file, rebuilt from its ``tokenizer.ggml.*`` metadata.

llama.cpp's converter stores a T5 tokenizer as metadata: ``tokenizer.ggml.model`` "t5" (a unigram model),
``tokens``, ``scores`` and ``token_type`` (the SentencePiece piece types: 1 normal, 2 unknown, 3 control,
4 user-defined, 5 unused, 6 byte), ``add_space_prefix``, ``remove_extra_whitespaces``,
``precompiled_charsmap`` (the normaliser table) and the special ids. :func:`spm_proto_from_gguf` writes them
back as a SentencePiece ``ModelProto`` (serialised by hand: the protobuf package is not needed), which
``sentencepiece.SentencePieceProcessor(model_proto=...)`` loads like the original ``spiece.model``.

:func:`spm_fields` reads the same facts out of a ``spiece.model`` (what a GGUF writer stores).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

from .errors import CheckpointError

UNIGRAM = 1
_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6


# ------------------------------------------------------------------------------------------ wire format
def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32 values are written as 10-byte varints
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _tag(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _int(field: int, value: int) -> bytes:
    return _tag(field, 0) + _varint(int(value))


def _bytes(field: int, value: bytes) -> bytes:
    return _tag(field, 2) + _varint(len(value)) + value


def _float(field: int, value: float) -> bytes:
    return _tag(field, 5) + struct.pack("<f", value)


def _read_fields(buf: bytes) -> list[tuple[int, int, object]]:
    """(field, wire type, value) of one message level (varints as ints, length-delimited as bytes)."""
    out, i = [], 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire == 2:
            n, i = _read_varint(buf, i)
            value, i = buf[i : i + n], i + n
        elif wire == 5:
            value, i = struct.unpack("<f", buf[i : i + 4])[0], i + 4
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((field, wire, value))
    return out


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    n, shift = 0, 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def _signed(n: int) -> int:
    return n - (1 << 64) if n >= 1 << 63 else n


# ------------------------------------------------------------------------------------------ build / read
def build_spm_proto(
    tokens: list[str],
    scores: list[float],
    types: list[int],
    *,
    unk_id: int,
    eos_id: int,
    pad_id: int,
    bos_id: int = -1,
    add_dummy_prefix: bool = True,
    remove_extra_whitespaces: bool = True,
    charsmap: bytes = b"",
) -> bytes:
    """A unigram SentencePiece ``ModelProto`` (serialised) from pieces, scores, types and the normaliser."""
    msg = bytearray()
    for piece, score, kind in zip(tokens, scores, types, strict=True):
        msg += _bytes(1, _bytes(1, piece.encode("utf-8")) + _float(2, float(score)) + _int(3, int(kind)))
    byte_fallback = any(int(k) == _BYTE for k in types)
    trainer = (
        _int(3, UNIGRAM) + _int(4, len(tokens)) + _int(35, byte_fallback)
        + _int(40, unk_id) + _int(41, bos_id) + _int(42, eos_id) + _int(43, pad_id)
    )  # fmt: skip
    msg += _bytes(2, trainer)
    name = b"nmt_nfkc" if charsmap else b"identity"
    normalizer = (
        _bytes(1, name) + _bytes(2, charsmap) + _int(3, add_dummy_prefix) + _int(4, remove_extra_whitespaces)
        + _int(5, True)
    )  # fmt: skip
    msg += _bytes(3, normalizer)
    return bytes(msg)


def spm_fields(proto: bytes) -> dict:
    """What a GGUF writer stores of a SentencePiece model: pieces, scores, types, special ids, normaliser."""
    tokens, scores, types = [], [], []
    out = dict(
        add_dummy_prefix=True,
        remove_extra_whitespaces=True,
        charsmap=b"",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
    )  # fmt: skip  (SentencePiece's defaults)
    for field, _, value in _read_fields(proto):
        if field == 1:
            piece = dict(_piece_defaults())
            for f, _, v in _read_fields(value):
                piece[f] = v
            tokens.append(piece[1].decode("utf-8"))
            scores.append(float(piece[2]))
            types.append(int(piece[3]))
        elif field == 2:
            names = {40: "unk_id", 41: "bos_id", 42: "eos_id", 43: "pad_id"}
            for f, _, v in _read_fields(value):
                if f in names:
                    out[names[f]] = _signed(v)
        elif field == 3:
            names = {2: "charsmap", 3: "add_dummy_prefix", 4: "remove_extra_whitespaces"}
            for f, _, v in _read_fields(value):
                if f in names:
                    out[names[f]] = bytes(v) if f == 2 else bool(v)
    return dict(tokens=tokens, scores=scores, types=types, **out)


def _piece_defaults() -> dict:
    return {1: b"", 2: 0.0, 3: _NORMAL}


def spm_proto_from_gguf(field: Callable[[str], object], source: Path | str = "GGUF") -> bytes:
    """Rebuild the SentencePiece model from a GGUF file's ``tokenizer.ggml.*`` fields (``field(key)``)."""
    model = field("tokenizer.ggml.model")
    if model != "t5":
        raise CheckpointError(
            f"{source}: tokenizer.ggml.model is {model!r}, not a T5 SentencePiece (unigram) tokenizer; "
            "pass the umT5 tokenizer folder (google/umt5-xxl)"
        )
    tokens, scores, types = (field(f"tokenizer.ggml.{k}") for k in ("tokens", "scores", "token_type"))
    if not tokens or scores is None or types is None or not len(tokens) == len(scores) == len(types):
        raise CheckpointError(
            f"{source}: tokenizer.ggml.tokens/scores/token_type are missing or of different lengths; "
            "pass the umT5 tokenizer folder (google/umt5-xxl)"
        )
    unk = field("tokenizer.ggml.unknown_token_id")
    if unk is None:
        unk = next((i for i, t in enumerate(types) if t == _UNKNOWN), 2)
    charsmap = field("tokenizer.ggml.precompiled_charsmap")
    return build_spm_proto(
        list(tokens), list(scores), list(types),
        unk_id=int(unk),
        eos_id=int(_or(field("tokenizer.ggml.eos_token_id"), 1)),
        pad_id=int(_or(field("tokenizer.ggml.padding_token_id"), 0)),
        bos_id=int(_or(field("tokenizer.ggml.bos_token_id"), -1)),
        add_dummy_prefix=bool(_or(field("tokenizer.ggml.add_space_prefix"), True)),
        remove_extra_whitespaces=bool(_or(field("tokenizer.ggml.remove_extra_whitespaces"), True)),
        charsmap=bytes(charsmap) if charsmap else b"",
    )  # fmt: skip


def _or(value, default):
    return default if value is None else value
