"""Checkpoint reading and DiT/adapter loading over every real file layout (tiny random files).

All tiny files derive from one seeded float32 source (``infinitetalk.tiny.dit.random_source``);
expected values below are recomputed here from that source by hand, per storage format.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from infinitetalk.config import AudioEncoderConfig, DiTConfig
from infinitetalk.errors import CheckpointError
from infinitetalk.loading.dit import (
    adapter_key_shapes,
    dit_key_shapes,
    fit_audio_encoder,
    infer_dit_config,
    load_dit,
)
from infinitetalk.loading.state_dict import open_checkpoint
from infinitetalk.model.dit import WanInfiniteTalkDiT
from infinitetalk.tiny.dit import DIT_FILES, TINY_DIT, TinyFile, file_tensors, random_source

OFFICIAL = "weights/Wan2.1-I2V-14B-480P"
OFFICIAL_SINGLE = "weights/InfiniteTalk/single/infinitetalk.safetensors"
OFFICIAL_MULTI = "weights/InfiniteTalk/multi/infinitetalk.safetensors"
DM = "models/diffusion_models"
MP = "models/model_patches"
HINT = "pass the adapter file from models/model_patches or weights/InfiniteTalk/single"


@pytest.fixture(scope="module")
def source():
    return random_source(TINY_DIT, seed=0)


def entry(rel: str) -> TinyFile:
    return next(f for f in DIT_FILES if f.path == rel or Path(f.path).parent.as_posix() == rel)


def expected_value(f: TinyFile, key: str, src: torch.Tensor) -> torch.Tensor:
    """The float32 value a loader must return for ``key`` stored as ``f.storage``, computed by hand."""
    in_block_linear = key.startswith("blocks.") and key.endswith(".weight") and src.dim() == 2
    if f.storage == "fp32":
        return src
    if f.storage == "mixed":  # as published: audio_proj.* and 1-D block tensors fp32, the rest fp16
        fp32 = key.startswith("audio_proj.") or (key.startswith("blocks.") and src.dim() == 1)
        return src if fp32 else src.half().float()
    if f.storage in ("fp16", "bf16"):
        return src.to(torch.float16 if f.storage == "fp16" else torch.bfloat16).float()
    if f.storage == "fp8":
        return src.to(torch.float8_e4m3fn).float() if in_block_linear else src.half().float()
    if in_block_linear:  # fp8 scaled: per-tensor absmax scale, like Kijai's files
        scale = src.abs().max() / 448.0
        return (src / scale).to(torch.float8_e4m3fn).float() * scale
    return src.bfloat16().float()


# --------------------------------------------------------------------------------------------
# key layout and config inference
# --------------------------------------------------------------------------------------------


def test_model_state_dict_matches_official_layout():
    for cfg in (TINY_DIT, DiTConfig()):  # the 14B model is built on meta: no memory
        model = WanInfiniteTalkDiT(cfg, device="meta")
        got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert got == dit_key_shapes(cfg)


def test_real_14b_layout_and_config_from_shapes():
    shapes = dit_key_shapes(DiTConfig())
    # literal shapes of the released files (spec §2), so this test does not only check itself
    literal = {
        "patch_embedding.weight": (5120, 36, 1, 2, 2),
        "head.head.weight": (64, 5120),
        "time_embedding.0.weight": (5120, 256),
        "text_embedding.0.weight": (5120, 4096),
        "img_emb.proj.0.weight": (1280,),
        "blocks.39.ffn.0.weight": (13824, 5120),
        "audio_proj.proj1.weight": (512, 46080),
        "audio_proj.proj1_vf.weight": (512, 73728),
        "audio_proj.proj3.weight": (24576, 512),
        "audio_proj.norm.weight": (768,),
        "blocks.39.audio_cross_attn.kv_linear.weight": (10240, 768),
    }
    assert {k: shapes[k] for k in literal} == literal
    assert len(adapter_key_shapes(DiTConfig())) == 330
    assert sum(
        torch.Size(s).numel() for s in adapter_key_shapes(DiTConfig()).values()
    ) / 1e9 == pytest.approx(2.49, abs=0.01)
    cfg = infer_dit_config({k: torch.Size(s) for k, s in shapes.items()})
    assert cfg == DiTConfig()
    assert (cfg.num_heads, cfg.head_dim, cfg.audio_blocks, cfg.audio_channels) == (40, 128, 12, 768)


def test_tiny_config_from_file_shapes(tiny_dit_root):
    with open_checkpoint(
        tiny_dit_root / DM / "wan2.1_i2v_480p_14B_infinitetalk_single_merged_fp16.safetensors"
    ) as r:
        cfg = infer_dit_config(r.shapes())
    assert cfg == TINY_DIT
    backbone = (cfg.dim, cfg.num_heads, cfg.num_layers, cfg.ffn_dim, cfg.text_dim, cfg.clip_dim)
    assert backbone == (256, 2, 2, 512, 64, 32)
    audio = (
        cfg.audio_blocks,
        cfg.audio_channels,
        cfg.audio_intermediate_dim,
        cfg.audio_output_dim,
        cfg.audio_context_tokens,
    )
    assert audio == (3, 96, 56, 72, 12)  # every dimension distinct: a swapped pair cannot go unnoticed
    # the audio blocks x channels split follows the encoder when it is given
    assert fit_audio_encoder(cfg, AudioEncoderConfig(num_layers=4, hidden_size=72)).audio_blocks == 4
    with pytest.raises(CheckpointError, match="expects 288 audio features per frame"):
        fit_audio_encoder(cfg, AudioEncoderConfig(num_layers=12, hidden_size=768))


def test_config_errors_name_the_problem():
    shapes = {k: torch.Size(s) for k, s in dit_key_shapes(TINY_DIT).items()}
    no_block1 = {k: s for k, s in shapes.items() if not k.startswith("blocks.1.")} | {
        k.replace("blocks.1.", "blocks.2."): s for k, s in shapes.items() if k.startswith("blocks.1.")
    }
    with pytest.raises(CheckpointError, match=r"transformer blocks \[1\] are missing"):
        infer_dit_config(no_block1)
    bad_window = shapes | {"audio_proj.proj1_vf.weight": torch.Size([64, 7 * 64])}
    with pytest.raises(CheckpointError, match="5:8 window ratio"):
        infer_dit_config(bad_window)
    with pytest.raises(CheckpointError, match="missing 'head.head.weight'"):
        infer_dit_config({k: s for k, s in shapes.items() if k != "head.head.weight"})


# --------------------------------------------------------------------------------------------
# every layout loads to the same parameters
# --------------------------------------------------------------------------------------------

LAYOUTS = [
    (f"{OFFICIAL}/diffusion_pytorch_model.safetensors.index.json", OFFICIAL_SINGLE),
    (OFFICIAL, OFFICIAL_MULTI),  # the folder itself
    (f"{DM}/wan2.1_i2v_480p_14B_fp16.safetensors", f"{MP}/wan2.1_infiniteTalk_single_fp16.safetensors"),
    (f"{DM}/wan2.1_i2v_480p_14B_bf16.safetensors", f"{MP}/wan2.1_infiniteTalk_multi_fp16.safetensors"),
    (f"{DM}/wan2.1_i2v_480p_14B_fp8_e4m3fn.safetensors", f"{DM}/Wan2_1-InfiniTetalk-Single_fp16.safetensors"),
    (
        f"{DM}/Wan2_1-I2V-14B-480p_fp8_e4m3fn_scaled_KJ.safetensors",  # lowercase "480p", as published
        f"{DM}/Wan2_1-InfiniteTalk-Single_fp8_e4m3fn_scaled_KJ.safetensors",
    ),
    (f"{DM}/wan2.1_i2v_480p_14B_infinitetalk_single_merged_fp16.safetensors", None),
    (f"{DM}/wan2.1_i2v_480p_14B_infinitetalk_single_merged_fp16.safetensors", OFFICIAL_MULTI),  # override
]


@pytest.mark.parametrize(("dit_rel", "adapter_rel"), LAYOUTS, ids=lambda p: Path(p).name if p else "merged")
def test_every_layout_loads_to_the_source_values(tiny_dit_root, source, dit_rel, adapter_rel):
    model = load_dit(
        tiny_dit_root / dit_rel, tiny_dit_root / adapter_rel if adapter_rel else None, dtype=torch.float32
    )
    dit_entry = entry(dit_rel)
    ad_entry = entry(adapter_rel) if adapter_rel else dit_entry
    params = model.state_dict()
    assert set(params) == set(dit_key_shapes(TINY_DIT))
    for key, value in params.items():
        is_adapter = key in source["single"]
        f = ad_entry if is_adapter else dit_entry
        src = source[f.adapter][key] if is_adapter else source["base"][key]
        assert value.dtype == torch.float32
        # exact: the loader returns exactly what the stored value means (bitwise for fp32 files)
        assert torch.equal(value, expected_value(f, key, src)), (key, f.path)


def test_fp16_file_loaded_as_fp16_is_bitwise_the_cast_source(tiny_dit_root, source):
    model = load_dit(
        tiny_dit_root / DM / "wan2.1_i2v_480p_14B_fp16.safetensors",
        tiny_dit_root / MP / "wan2.1_infiniteTalk_single_fp16.safetensors",
        dtype=torch.float16,
    )
    sd = model.state_dict()
    src = source["base"] | source["single"]
    assert sd["blocks.0.self_attn.q.weight"].dtype == torch.float16
    assert sd["time_embedding.0.weight"].dtype == torch.float32  # model policy: fp32 modules stay fp32
    assert sd["blocks.1.modulation"].dtype == torch.float32
    for key, value in sd.items():
        assert torch.equal(value, src[key].to(torch.float16).to(value.dtype)), key


class CastLinear(torch.nn.Linear):
    """Like ComfyUI's manual_cast Linear: weights cast to the input dtype at call time."""

    def forward(self, x):
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return torch.nn.functional.linear(x, self.weight.to(x.dtype), bias)


CAST_OPS = SimpleNamespace(Linear=CastLinear, Conv3d=torch.nn.Conv3d, LayerNorm=torch.nn.LayerNorm)


def test_fp8_storage_keeps_block_linears_in_fp8(tiny_dit_root, source):
    dit = tiny_dit_root / DM / "wan2.1_i2v_480p_14B_fp8_e4m3fn.safetensors"
    adapter = tiny_dit_root / MP / "wan2.1_infiniteTalk_single_fp16.safetensors"
    m8 = load_dit(dit, adapter, dtype=torch.float8_e4m3fn, operations=CAST_OPS)
    sd = m8.state_dict()
    assert sd["blocks.1.ffn.0.weight"].dtype == torch.float8_e4m3fn
    assert sd["blocks.1.audio_cross_attn.kv_linear.weight"].dtype == torch.float8_e4m3fn
    assert sd["blocks.1.ffn.0.bias"].dtype == sd["patch_embedding.weight"].dtype == torch.bfloat16
    assert sd["time_projection.1.weight"].dtype == torch.float32
    want = source["base"]["blocks.1.ffn.0.weight"].to(torch.float8_e4m3fn)
    assert torch.equal(sd["blocks.1.ffn.0.weight"].view(torch.uint8), want.view(torch.uint8))
    # fp8 values are exact in bf16: a bf16 model holding the same values (the fp16 adapter's block
    # linears were rounded to fp8 too) predicts bit for bit the same
    m16 = load_dit(dit, adapter, dtype=torch.bfloat16, operations=CAST_OPS)
    m16.load_state_dict(
        {k: v.to(torch.bfloat16) if v.dtype == torch.float8_e4m3fn else v for k, v in sd.items()}
    )
    g = torch.Generator().manual_seed(0)
    args = (
        torch.randn(1, 16, 2, 4, 4, generator=g), torch.tensor([300.0]), torch.randn(1, 5, 64, generator=g),
        torch.randn(1, 257, 32, generator=g), torch.randn(1, 20, 2, 4, 4, generator=g),
        torch.randn(1, 1, 5, 5, 3, 96, generator=g),
    )  # fmt: skip
    with torch.no_grad():
        assert torch.equal(m8(*args), m16(*args))


def test_fp8_scaled_dequantisation_by_hand(tmp_path):
    """Per-tensor (0-d and [1]) and per-channel scales: weight.float() * scale, then cast."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(6, 5, generator=g)
    s_tensor = w.abs().max() / 448
    s_chan = w.abs().amax(dim=1) / 448
    tensors = {
        "a.weight": (w / s_tensor).to(torch.float8_e4m3fn),
        "a.scale_weight": s_tensor.reshape(()).clone(),
        "a.scale_input": torch.tensor(1.0),
        "b.weight": (w / s_tensor).to(torch.float8_e5m2),
        "b.weight_scale": s_tensor.reshape(1).clone(),
        "c.weight": (w / s_chan[:, None]).to(torch.float8_e4m3fn),
        "c.scale_weight": s_chan,
        "d.weight": w.to(torch.float8_e4m3fn),  # plain fp8, no scale
        "scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn),
    }
    save_file(tensors, str(tmp_path / "s.safetensors"))
    r = open_checkpoint(tmp_path / "s.safetensors")
    assert sorted(r.keys()) == ["a.weight", "b.weight", "c.weight", "d.weight"]  # helper keys hidden
    assert r.is_scaled and r.dtype("a.weight") == torch.float8_e4m3fn
    by_hand = {
        "a.weight": tensors["a.weight"].float() * s_tensor,
        "b.weight": tensors["b.weight"].float() * s_tensor,
        "c.weight": tensors["c.weight"].float() * s_chan[:, None],
        "d.weight": tensors["d.weight"].float(),
    }
    for key, want in by_hand.items():
        assert torch.equal(r.get(key), want), key
        assert torch.equal(r.get(key, dtype=torch.bfloat16), want.bfloat16()), key
    # and the result is close to the original weight (fp8 e4m3: 3 mantissa bits -> <= 1/16 relative)
    assert (r.get("a.weight") - w).abs().max() <= w.abs().max() / 16


# --------------------------------------------------------------------------------------------
# readers: prefixes, .pth, shards
# --------------------------------------------------------------------------------------------


def test_prefixes_are_stripped(tmp_path):
    t = {"blocks.0.x.weight": torch.ones(2), "patch_embedding.weight": torch.zeros(1)}
    save_file({f"module.model.diffusion_model.{k}": v for k, v in t.items()}, str(tmp_path / "a.safetensors"))
    save_file({f"net.{k}": v for k, v in t.items()}, str(tmp_path / "b.safetensors"))
    assert sorted(open_checkpoint(tmp_path / "a.safetensors").keys()) == sorted(t)
    # an unknown prefix is found from the key the caller expects
    r = open_checkpoint(tmp_path / "b.safetensors", anchor="patch_embedding.weight")
    assert (r.prefix, sorted(r.keys())) == ("net.", sorted(t))
    assert sorted(open_checkpoint(tmp_path / "b.safetensors").keys()) == sorted(f"net.{k}" for k in t)


@pytest.mark.parametrize("zipped", [True, False])
def test_pth_is_read_safely(tmp_path, zipped):
    sd = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.bfloat16), "step": 3}
    torch.save({"state_dict": sd}, tmp_path / "m.pth", _use_new_zipfile_serialization=zipped)
    r = open_checkpoint(tmp_path / "m.pth")
    assert sorted(r.keys()) == ["b", "w"]  # non-tensors dropped, wrapper unwrapped
    assert torch.equal(r.get("w", dtype=torch.float16), sd["w"].half())
    assert r.shape("b") == (2,) and r.dtype("b") == torch.bfloat16


class Evil:  # anything that is not a tensor container must never be unpickled
    def __reduce__(self):
        return (os.system, ("echo unsafe",))


def test_pickle_with_objects_is_refused(tmp_path):
    torch.save({"w": torch.ones(1), "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        open_checkpoint(tmp_path / "evil.pt")


def test_missing_shard_is_named(tiny_dit_root, tmp_path):
    folder = tmp_path / "Wan2.1-I2V-14B-480P"
    shutil.copytree(tiny_dit_root / OFFICIAL, folder)
    (folder / "diffusion_pytorch_model-00004-of-00007.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"missing shard\(s\) diffusion_pytorch_model-00004-of-00007"):
        load_dit(folder, tiny_dit_root / OFFICIAL_SINGLE)


# --------------------------------------------------------------------------------------------
# wrong files: one documented line each
# --------------------------------------------------------------------------------------------


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_unknown_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello, this is not a checkpoint at all")
    with pytest.raises(CheckpointError) as exc:
        load_dit(tmp_path / "notes.txt")
    assert "unknown file format" in one_line(exc) and "notes.txt" in one_line(exc)
    (tmp_path / "x.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        open_checkpoint(tmp_path / "x.safetensors")
    (tmp_path / "y.pth").write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError, match="y.pth: unreadable PyTorch checkpoint"):
        open_checkpoint(tmp_path / "y.pth")
    (tmp_path / "q.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(64))  # a GGUF file without tensors
    with pytest.raises(
        CheckpointError, match=r"q.gguf: not a Wan2.1 DiT checkpoint \(no 'patch_embedding.weight' among 0"
    ):
        load_dit(tmp_path / "q.gguf")
    with pytest.raises(CheckpointError, match="file not found"):
        load_dit(tmp_path / "absent.safetensors")
    save_file({"encoder.weight": torch.ones(2)}, str(tmp_path / "t5.safetensors"))
    with pytest.raises(CheckpointError, match="not a Wan2.1 DiT checkpoint"):
        load_dit(tmp_path / "t5.safetensors")


def test_dit_without_adapter(tiny_dit_root):
    path = tiny_dit_root / DM / "wan2.1_i2v_480p_14B_fp16.safetensors"
    with pytest.raises(CheckpointError) as exc:
        load_dit(path)
    assert one_line(exc) == f"{path}: has no InfiniteTalk adapter keys (audio_proj.*); {HINT}"


def test_adapter_given_as_dit(tiny_dit_root):
    with pytest.raises(CheckpointError, match="is an InfiniteTalk adapter, not a DiT"):
        load_dit(tiny_dit_root / MP / "wan2.1_infiniteTalk_single_fp16.safetensors")
    with pytest.raises(CheckpointError, match="not an InfiniteTalk adapter"):
        load_dit(
            tiny_dit_root / DM / "wan2.1_i2v_480p_14B_fp16.safetensors",
            tiny_dit_root / DM / "wan2.1_i2v_480p_14B_bf16.safetensors",
        )


def _adapter_file(path: Path, cfg: DiTConfig, tweak=None) -> Path:
    tensors = random_source(cfg, seed=5)["single"]
    if tweak:
        tensors = tweak(tensors)
    save_file(tensors, str(path))
    return path


def test_adapter_dims_must_fit_the_dit(tiny_dit_root, tmp_path):
    dit = tiny_dit_root / DM / "wan2.1_i2v_480p_14B_fp16.safetensors"
    wide = _adapter_file(tmp_path / "wide.safetensors", replace(TINY_DIT, dim=384, num_heads=3))
    with pytest.raises(CheckpointError) as exc:
        load_dit(dit, wide)
    assert "wide.safetensors: adapter is for a DiT of width 384 with 2 layers" in one_line(exc)
    assert "has width 256 and 2 layers" in one_line(exc)
    deep = _adapter_file(tmp_path / "deep.safetensors", replace(TINY_DIT, num_layers=3))
    with pytest.raises(CheckpointError, match="width 256 with 3 layers"):
        load_dit(dit, deep)
    odd_audio = _adapter_file(
        tmp_path / "odd.safetensors", TINY_DIT,
        lambda t: t | {"audio_proj.norm.weight": torch.ones(48), "audio_proj.norm.bias": torch.zeros(48)},
    )  # fmt: skip
    with pytest.raises(
        CheckpointError, match="audio tokens are 48 wide but the audio cross-attention expects 72"
    ):
        load_dit(dit, odd_audio)


def test_truncated_files(tiny_dit_root, tmp_path):
    for rel in (
        f"{DM}/wan2.1_i2v_480p_14B_fp16.safetensors",
        f"{MP}/wan2.1_infiniteTalk_single_fp16.safetensors",
    ):
        cut = tmp_path / Path(rel).name
        data = (tiny_dit_root / rel).read_bytes()
        cut.write_bytes(data[: len(data) - 1000])
        args = (
            (cut, tiny_dit_root / OFFICIAL_SINGLE)
            if "diffusion" in rel
            else (tiny_dit_root / DM / FILES_FP16, cut)
        )
        with pytest.raises(CheckpointError) as exc:
            load_dit(*args)
        assert f"{cut}: file truncated" in one_line(exc) and "download the file again" in one_line(exc)
    torch.save({"w": torch.randn(300, 100)}, tmp_path / "t.pth")
    (tmp_path / "t.pth").write_bytes((tmp_path / "t.pth").read_bytes()[:-40])
    with pytest.raises(CheckpointError) as exc:
        open_checkpoint(tmp_path / "t.pth")
    assert "t.pth: unreadable PyTorch checkpoint" in one_line(exc) and "truncated" in one_line(exc)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match="too small"):
        open_checkpoint(tiny)


FILES_FP16 = "wan2.1_i2v_480p_14B_fp16.safetensors"


def test_missing_keys(tiny_dit_root, tmp_path, source):
    tensors = file_tensors(entry(f"{DM}/{FILES_FP16}"), source)
    del tensors["blocks.1.cross_attn.k_img.weight"]
    save_file(tensors, str(tmp_path / "partial.safetensors"))
    with pytest.raises(CheckpointError) as exc:
        load_dit(tmp_path / "partial.safetensors", tiny_dit_root / OFFICIAL_SINGLE)
    assert "partial.safetensors: 1 model tensors missing (e.g. blocks.1.cross_attn.k_img.weight)" in one_line(
        exc
    )


def test_index_shard_mismatch(tiny_dit_root, tmp_path):
    folder = tmp_path / "w"
    shutil.copytree(tiny_dit_root / OFFICIAL, folder)
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["head.head.weight"] = "diffusion_pytorch_model-00001-of-00007.safetensors"
    index.write_text(json.dumps(data))
    with pytest.raises(
        CheckpointError, match="index lists 'head.head.weight' in diffusion_pytorch_model-00001"
    ):
        open_checkpoint(folder)


# --------------------------------------------------------------------------------------------
# memory: peak RSS while loading stays near the file size
# --------------------------------------------------------------------------------------------

RSS_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from infinitetalk.loading.dit import load_dit
    def status_kib(field):  # VmRSS: resident now; VmHWM: peak resident of this process image
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
    base = status_kib("VmRSS")
    model = load_dit(sys.argv[1], dtype=torch.float16)
    print(base, status_kib("VmHWM"), sum(p.numel() * p.element_size() for p in model.parameters()) // 1024)
    """
)
# ru_maxrss is not used here: Linux carries it over fork+exec, so a child of the (large) pytest
# process would report the parent's peak. VmHWM belongs to the new process image only.


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_peak_rss_near_file_size(tmp_path):
    """A ~100 MB fp16 merged file: load peak minus the RSS before loading <= 1.3x the file size."""
    cfg = replace(TINY_DIT, dim=768, num_heads=6, ffn_dim=3072, num_layers=4, text_dim=256)
    src = random_source(cfg, seed=1)
    path = tmp_path / "big_fp16.safetensors"
    save_file({k: v.half() for part in ("base", "single") for k, v in src[part].items()}, str(path))
    del src
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(path)], capture_output=True, text=True, env=env, check=True
    )
    base, peak, kept = (int(v) for v in out.stdout.split())
    size = path.stat().st_size / 1024
    assert size > 80_000  # the check means something only for a file much larger than noise
    # fp32 modules (time embedding, modulation, head) are widened: what is kept is a bit more than the file
    assert kept < 1.1 * size
    assert peak - base <= 1.3 * size, f"peak RSS grew by {(peak - base) / size:.2f}x the file size"


# --------------------------------------------------------------------------------------------
# the tiny generator CLI
# --------------------------------------------------------------------------------------------


def test_tiny_cli_writes_real_file_names(tmp_path, capsys, tiny_dit_root):
    from infinitetalk.tiny.__main__ import main

    assert main(["--out", str(tmp_path), "--only", "dit"]) == 0
    shards = sorted(p.name for p in (tmp_path / OFFICIAL).glob("*.safetensors"))
    assert shards == [f"diffusion_pytorch_model-{i:05d}-of-00007.safetensors" for i in range(1, 8)]
    for f in DIT_FILES:
        assert (tmp_path / f.path).is_file(), f.path
        # same seed -> byte-identical files (the session fixture used seed 0 too)
        assert (tmp_path / f.path).read_bytes() == (tiny_dit_root / f.path).read_bytes(), f.path
    out = capsys.readouterr().out
    assert (
        "models/model_patches/wan2.1_infiniteTalk_multi_fp16.safetensors" in out and "total, 19 files" in out
    )
