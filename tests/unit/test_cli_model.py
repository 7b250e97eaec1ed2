"""Command line model flags: one set of names with the node (quantization, block_swap, attention, compile),
and the checks that run before any weight is read (attention kernel, memory)."""

from __future__ import annotations

import logging
import re

import pytest

from infinitetalk.build import AUTO_SWAP, NO_SWAP, BlockSwap
from infinitetalk.cli import build_parser, main, model_options
from infinitetalk.errors import InputError

from .test_cli import _inputs, _probe


def options(*argv):
    return model_options(build_parser().parse_args(["--input_path", "x.png", *argv]))


def test_model_flags_map_to_model_options():
    assert (
        options().quantization == "none" and options().block_swap == NO_SWAP and options().attention == "auto"
    )
    assert options("--quantization", "fp8_e4m3fn").quantization == "fp8_e4m3fn"  # fp8 storage
    assert options("--quant", "int8").quantization == "quanto_int8"  # the reference's flag: optimum-quanto
    assert options("--quant", "fp8").quantization == "quanto_fp8"
    o = options("--block_swap", "auto", "--attention", "sdpa", "--compile", "--dtype", "bf16")
    assert (o.block_swap, o.attention, o.compile, o.precision) == (AUTO_SWAP, "sdpa", True, "bf16")
    assert options("--block_swap", "12").block_swap == BlockSwap(12)
    with pytest.raises(InputError, match="--quant int8 and --quantization fp8_e4m3fn disagree"):
        options("--quant", "int8", "--quantization", "fp8_e4m3fn")


@pytest.mark.parametrize(("bad", "needle"), [
    (["--block_swap", "-1"], "argument --block_swap: '-1' is not a block count: use 0, 1, ... or auto"),
    (["--block_swap", "some"], "argument --block_swap: 'some' is not a block count"),
    (["--quantization", "int8"], "argument --quantization: invalid choice: 'int8'"),
])  # fmt: skip
def test_bad_model_flags_are_refused_by_the_parser(bad, needle, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--input_path", "x.png", *bad])
    assert needle in capsys.readouterr().err


@pytest.fixture()
def no_weight_reads(monkeypatch):
    """Fail the test if any DiT weight or the audio encoder is read."""
    from infinitetalk.encoders import wav2vec2
    from infinitetalk.loading import dit

    reads = []
    monkeypatch.setattr(dit, "_load_weights", lambda *a, **k: reads.append("dit"))
    monkeypatch.setattr(wav2vec2, "load_audio_encoder", lambda *a, **k: reads.append("wav2vec2"))
    return reads


def test_attention_and_memory_are_checked_before_any_weight(tiny_root, tmp_path, monkeypatch, capsys,
                                                            no_weight_reads):  # fmt: skip
    face, speech = _inputs(tmp_path)
    argv = [
        "--weights",
        str(tiny_root),
        "--input_path",
        str(face),
        "--audio_path",
        str(speech),
        "--device",
        "cpu",
    ]
    assert main([*argv, "--attention", "flash"]) == 2
    assert (
        "attention backend 'flash' runs on CUDA only but the model computes on cpu" in capsys.readouterr().err
    )
    monkeypatch.setattr("infinitetalk.preflight.available_ram", lambda: 2**30)
    assert main([*argv, "--size", "1280x720"]) == 2
    err = capsys.readouterr().err
    assert (
        "DiT needs about" in err
        and "RAM (1280x720, 81 frames, none, block_swap 0) but 1.0 GiB is free" in err
    )
    assert re.search(r"is free: (use quantization fp8_e4m3fn and )?lower frame_num to \d+", err), err
    assert no_weight_reads == []


def test_cli_run_with_fp8_storage_and_block_swap_auto(tiny_root, tmp_path, caplog):
    face, speech = _inputs(tmp_path, seconds=0.3)
    out = tmp_path / "o.mp4"
    argv = ["--weights", str(tiny_root), "--input_path", str(face), "--audio_path", str(speech),
            "--output_path", str(out), "--size", "32x32", "--sample_steps", "1", "--sample_text_guide_scale", "1",
            "--quantization", "fp8_e4m3fn", "--block_swap", "auto", "--attention", "sdpa", "--device", "cpu"]  # fmt: skip
    with caplog.at_level(logging.INFO):
        assert main(argv) == 0
    assert "memory preflight (fp8_e4m3fn, torch.float32): 32x32, 81 frames" in caplog.text
    frames, rate, _, _, _ = _probe(out)
    assert frames >= 1 and rate == 25
