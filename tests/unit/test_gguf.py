"""GGUF: dequantisation against gguf-py's numpy reference, files read by content, weights kept quantised,
the tokenizer rebuilt from metadata, the doctor's lines, and a command-line run equal to the run on
safetensors files holding the dequantised values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
from gguf import quants as gguf_quants  # noqa: E402

from infinitetalk.errors import CheckpointError  # noqa: E402
from infinitetalk.gguf_quants import BLOCKS, dequantize  # noqa: E402
from infinitetalk.gguf_tensor import GGUFLinearMixin, GGUFWeight  # noqa: E402

# scale fields (byte offset of each float16) of every block type: filled with small finite float16 values
_SCALES = {
    "Q8_0": (0,), "Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2),
    "Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,),
}  # fmt: skip


def _random_blocks(qtype: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    n, size = BLOCKS[qtype]
    if qtype in ("F32", "F16", "BF16"):
        values = rng.standard_normal((rows, cols)).astype(np.float32)
        if qtype == "BF16":
            return (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(rows, -1)
        return values.astype(np.float16 if qtype == "F16" else np.float32).view(np.uint8).reshape(rows, -1)
    blocks = rng.integers(0, 256, size=(rows * cols // n, size), dtype=np.uint8)
    for at in _SCALES[qtype]:  # valid scales: small float16 values of both signs
        scale = (rng.standard_normal(blocks.shape[0]) * 0.01).astype(np.float16)
        blocks[:, at : at + 2] = scale.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(rows, -1)


@pytest.mark.parametrize("qtype", list(BLOCKS))
def test_dequantisation_equals_gguf_py_exactly(qtype):
    rng = np.random.default_rng(len(qtype) * 7 + BLOCKS[qtype][1])
    n = BLOCKS[qtype][0]
    for rows, per_row in ((13, 3), (1, 1), (7, 5)):  # row counts and widths not a multiple of anything
        cols = n * per_row if n > 1 else 37 * per_row
        raw = _random_blocks(qtype, rows, cols, rng)
        want = gguf_quants.dequantize(raw, gguf.GGMLQuantizationType[qtype]).reshape(rows, cols)
        got = dequantize(torch.from_numpy(raw.copy()), qtype, (rows, cols), torch.float32)
        assert got.dtype == torch.float32 and got.shape == (rows, cols)
        np.testing.assert_array_equal(got.numpy(), want.astype(np.float32))


def test_q4_k_quantiser_is_valid_and_close():
    from infinitetalk.tiny.gguf import quantize_q4_k

    x = np.random.default_rng(1).standard_normal((3, 512)).astype(np.float32) * 0.05
    blocks = quantize_q4_k(x)
    back = gguf_quants.dequantize(blocks, gguf.GGMLQuantizationType.Q4_K).reshape(3, 512)
    # 4 bits over each 32-weight range (6-bit scale steps): error within one step of the group's range
    step = (x.reshape(-1, 32).max(1) - np.minimum(x.reshape(-1, 32).min(1), 0)) / 15
    err = np.abs(back - x).reshape(-1, 32).max(1)
    assert (err <= 1.1 * step + 1e-4).all()


def test_unsupported_type_is_refused_naming_type_and_tensor():
    with pytest.raises(CheckpointError, match=r"tensor 'blocks\.0\.x\.weight' is stored as GGUF type IQ4_XS"):
        from infinitetalk.gguf_quants import check_supported

        check_supported("IQ4_XS", "blocks.0.x.weight", "f.gguf")


@pytest.fixture(scope="module")
def gguf_trees(tiny_root, tmp_path_factory):
    from infinitetalk.tiny.gguf import write_gguf_trees

    return write_gguf_trees(tiny_root, tmp_path_factory.mktemp("gguf"))


def test_files_are_identified_by_content(gguf_trees):
    from infinitetalk.loading.identify import identify
    from infinitetalk.weights import Component

    dit, adapter, umt5 = (identify(gguf_trees[k]) for k in ("dit", "adapter", "umt5"))
    assert dit.usable and dit.component is Component.DIT and dit.layout == "GGUF"
    assert dit.storage.startswith("GGUF Q4_K") and "Q8_0" in dit.storage and "F32" in dit.storage
    assert adapter.component is Component.ADAPTER_SINGLE and adapter.storage.startswith("GGUF Q8_0")
    assert umt5.component is Component.TEXT_ENCODER and umt5.spiece_model and "vocab" in umt5.dims


def test_dit_keeps_quantised_weights_and_5d_shape_restored(gguf_trees):
    from infinitetalk.loading.dit import load_dit

    model = load_dit(gguf_trees["dit"], gguf_trees["adapter"], dtype=torch.float32)
    q = model.blocks[0].self_attn.q
    assert isinstance(q, GGUFLinearMixin) and isinstance(q.weight, GGUFWeight) and q.weight.qtype == "Q4_K"
    assert q.weight.numel() == 256 * 256 // 256 * 144  # bytes as stored
    assert model.patch_embedding.weight.dim() == 5  # flattened in the file, orig_shape restored
    reference = load_dit(gguf_trees["dit_dequant"], gguf_trees["adapter_dequant"], dtype=torch.float32)
    torch.testing.assert_close(q.weight.dequantize(), reference.blocks[0].self_attn.q.weight, rtol=0, atol=0)
    x = torch.randn(3, 256)
    torch.testing.assert_close(q(x), reference.blocks[0].self_attn.q(x), rtol=1e-6, atol=1e-6)


def test_gguf_weight_moves_pins_and_counts_real_bytes(gguf_trees):
    from infinitetalk.loading.dit import load_dit
    from infinitetalk.offload import place_model

    model = load_dit(gguf_trees["dit"], gguf_trees["adapter"], dtype=torch.float32)
    w = model.blocks[1].ffn[0].weight
    moved = w.to("meta")
    assert isinstance(moved, GGUFWeight) and moved.qtype == w.qtype and moved.gguf_shape == w.gguf_shape
    assert w.detach().numel() * w.element_size() == w.numel()  # uint8: numel is the byte count
    swap = place_model(model, "cpu", blocks_to_swap=1)
    assert isinstance(model.blocks[1].ffn[0].weight, GGUFWeight)
    swap.remove()


def test_lora_is_added_to_the_dequantised_weight(gguf_trees):
    from infinitetalk.loading.dit import load_dit
    from infinitetalk.lora import merge_lora

    g = torch.Generator().manual_seed(0)
    lora = {
        "diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.randn(4, 256, generator=g) * 0.1,
        "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.randn(256, 4, generator=g) * 0.1,
    }
    quant = load_dit(gguf_trees["dit"], gguf_trees["adapter"], dtype=torch.float32)
    plain = load_dit(gguf_trees["dit_dequant"], gguf_trees["adapter_dequant"], dtype=torch.float32)
    assert merge_lora(quant, lora, 0.5) == 1 and merge_lora(plain, lora, 0.5) == 1
    assert isinstance(quant.blocks[0].self_attn.q.weight, GGUFWeight)  # still quantised, delta kept aside
    x = torch.randn(2, 256, generator=g)
    torch.testing.assert_close(
        quant.blocks[0].self_attn.q(x), plain.blocks[0].self_attn.q(x), rtol=1e-5, atol=1e-5
    )


def test_tokenizer_rebuilt_from_metadata_tokenises_as_the_original(gguf_trees, tiny_root):
    import sentencepiece

    from infinitetalk.gguf_read import GGUFFile
    from infinitetalk.tiny.encoders import tokenizer_dir

    original = sentencepiece.SentencePieceProcessor(
        model_file=str(tiny_root / tokenizer_dir() / "spiece.model")
    )
    proto = GGUFFile(gguf_trees["umt5"]).read("spiece_model").numpy().tobytes()
    rebuilt = sentencepiece.SentencePieceProcessor(model_proto=proto)
    texts = ["a person talking", "Hello, World!  two  spaces", "ünïcödé 123 ~!@#", "", " lead and trail "]
    for text in texts:
        assert rebuilt.encode(text) == original.encode(text), text
    assert rebuilt.get_piece_size() == original.get_piece_size()
    assert (rebuilt.eos_id(), rebuilt.unk_id(), rebuilt.pad_id()) == (original.eos_id(), original.unk_id(),
                                                                       original.pad_id())  # fmt: skip


def test_text_encoder_from_gguf_equals_the_dequantised_file(gguf_trees):
    from infinitetalk.encoders.text import load_text_encoder

    a = load_text_encoder(gguf_trees["umt5"], dtype=torch.float32).encode(["a person talking"])[0]
    b = load_text_encoder(gguf_trees["umt5_dequant"], dtype=torch.float32).encode(["a person talking"])[0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_doctor_lines_truncated_and_unsupported(gguf_trees, tmp_path):
    from infinitetalk.loading.identify import identify

    data = gguf_trees["dit"].read_bytes()
    cut = tmp_path / "wan2.1-i2v-14b-480p-Q4_K_M.gguf"
    cut.write_bytes(data[: len(data) * 2 // 3])
    info = identify(cut)
    assert not info.usable and "truncated" in info.problem and "\n" not in info.problem

    bad = tmp_path / "iq.gguf"
    w = gguf.GGUFWriter(str(bad), "wan")
    w.add_tensor(
        "blocks.0.ffn.0.weight", np.zeros((4, 136), np.uint8), raw_dtype=gguf.GGMLQuantizationType.IQ4_XS
    )
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    info = identify(bad)
    assert info.problem.endswith(
        "tensor 'blocks.0.ffn.0.weight' is stored as GGUF type IQ4_XS, which is not supported (supported: F32, "
        "F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K); use a file quantised with one of "
        "these types"
    )


def test_cli_run_on_gguf_equals_run_on_dequantised_safetensors(gguf_trees, tmp_path):
    """Lossless output (ffv1), fp32 on the CPU: the two trees hold the same values, so the videos must match
    exactly (tolerance 0 levels of 255)."""
    import av

    from infinitetalk.cli import main

    from .test_cli import _inputs

    face, speech = _inputs(tmp_path, seconds=0.3)

    def run(tree, out):
        argv = ["--weights", str(tree / "models"), "--input_path", str(face), "--audio_path", str(speech),
                "--output_path", str(out), "--size", "32x32", "--sample_steps", "2", "--frame_num", "17",
                "--motion_frame", "5", "--format", "ffv1-mkv", "--dtype", "fp32", "--device", "cpu"]  # fmt: skip
        assert main(argv) == 0
        with av.open(str(out)) as c:
            return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(int)

    a, b = run(gguf_trees["gguf"], tmp_path / "g.mkv"), run(gguf_trees["dequant"], tmp_path / "d.mkv")
    assert a.shape == b.shape and a.shape[0] >= 1
    assert np.abs(a - b).max() == 0


def test_hub_lists_gguf_variants():
    from infinitetalk.hub import plan

    got = {
        f.part: (f.repo_id, f.filename)
        for f in plan("comfyui", ["dit", "adapter_single", "text_encoder"], "Q8_0")
    }
    assert got == {
        "dit": ("city96/Wan2.1-I2V-14B-480P-gguf", "wan2.1-i2v-14b-480p-Q8_0.gguf"),
        "adapter_single": ("Kijai/WanVideo_comfy_GGUF", "InfiniteTalk/Wan2_1-InfiniteTalk_Single_Q8.gguf"),
        "text_encoder": ("city96/umt5-xxl-encoder-gguf", "umt5-xxl-encoder-Q8_0.gguf"),
    }
    assert [f.filename for f in plan("comfyui", ["vae"], "Q4_K_M")] == [
        "split_files/vae/wan_2.1_vae.safetensors"
    ]


def test_gguf_linear_on_host_layers_with_dynamic_vram(gguf_trees):
    """The GGUF linear built on ComfyUI's dynamic-VRAM layers (no weight until loaded): same outputs."""
    from infinitetalk.loading.dit import load_dit
    from tests.standin_comfy_ops import make_operations

    ops = make_operations()
    model = load_dit(gguf_trees["dit"], gguf_trees["adapter"], dtype=torch.float32, operations=ops)
    plain = load_dit(gguf_trees["dit_dequant"], gguf_trees["adapter_dequant"], dtype=torch.float32)
    ffn = model.blocks[0].ffn[0]
    assert isinstance(ffn, ops.Linear) and isinstance(ffn.weight, GGUFWeight)
    x = torch.randn(2, 256)
    torch.testing.assert_close(ffn(x), plain.blocks[0].ffn[0](x), rtol=1e-5, atol=1e-5)


def test_doctor_prints_a_line_per_gguf_file(gguf_trees, tmp_path, capsys):
    """The doctor on a GGUF tree: component, publisher, layout, the mix of quantisation types and the dims of
    each GGUF file, the tokenizer found inside the umT5 file, and a truncated file named in one line."""
    import shutil

    from infinitetalk.doctor import main

    models = tmp_path / "models"
    shutil.copytree(gguf_trees["gguf"] / "models", models)
    data = gguf_trees["dit"].read_bytes()
    (models / "unet").mkdir()
    (models / "unet" / "wan2.1-i2v-14b-480p-Q8_0.gguf").write_bytes(data[: len(data) // 2])
    assert main(["--weights", str(models)]) == 0
    lines = capsys.readouterr().out.splitlines()

    def row(component):
        return " ".join(next(ln for ln in lines if ln.startswith(component + " ")).split())

    assert row("dit").startswith(
        "dit wan2.1-i2v-14b-480p-Q4_K_M.gguf city96, GGUF GGUF Q4_K 54% + Q8_0 35% + F32 11% dim 256, 2 layers"
    )
    assert row("adapter_single").startswith(
        "adapter_single Wan2_1-InfiniteTalk_Single_Q8.gguf Kijai, GGUF GGUF Q8_0"
    )
    assert row("text_encoder").startswith(
        "text_encoder umt5-xxl-encoder-Q8_0.gguf city96, GGUF GGUF Q8_0 98% + F32 2% d_model 64"
    )
    assert row("tokenizer") == "tokenizer with umt5-xxl-encoder-Q8_0.gguf (inside or beside it)"
    cut = [ln for ln in lines if "unet/wan2.1-i2v-14b-480p-Q8_0.gguf" in ln]
    assert len(cut) == 1 and "file truncated: its tensor data ends before the last tensor" in cut[0]


def test_merged_dit_and_multi_adapter_gguf(gguf_trees, tmp_path):
    """A DiT GGUF with the adapter merged in loads alone (same layers as DiT + adapter files); an adapter GGUF
    published under the multi name is the two-speaker adapter (single and multi have the same keys)."""
    import shutil

    from infinitetalk.gguf_read import GGUFFile
    from infinitetalk.loading.dit import load_dit
    from infinitetalk.loading.identify import identify
    from infinitetalk.tiny.gguf import write_gguf
    from infinitetalk.weights import Component

    tensors = {}
    for path in (gguf_trees["dit_dequant"], gguf_trees["adapter_dequant"]):
        from infinitetalk.loading.state_dict import open_checkpoint

        with open_checkpoint(path) as r:
            tensors |= {k: r.get(k, dtype=torch.float32) for k in r.keys()}
    merged = tmp_path / "wan2.1-i2v-14b-480p-Q4_K_M.gguf"
    values = write_gguf(merged, tensors, "wan", k_quant=True)
    info = identify(merged)
    assert info.component is Component.DIT and info.merged_adapter and "adapter merged" in info.dims
    assert len(GGUFFile(merged).keys()) == len(tensors)
    alone = load_dit(merged, dtype=torch.float32)  # no adapter file: the merged one is used
    q = alone.blocks[1].audio_cross_attn.q_linear
    assert isinstance(q.weight, GGUFWeight) and q.weight.qtype == "Q4_K"
    key = "blocks.1.audio_cross_attn.q_linear"
    x = torch.randn(2, 256)
    want = torch.nn.functional.linear(x, values[key + ".weight"], values[key + ".bias"])
    torch.testing.assert_close(q(x), want, rtol=1e-6, atol=1e-6)

    multi = tmp_path / "Wan2_1-InfiniteTalk_Multi_Q8.gguf"
    shutil.copyfile(gguf_trees["adapter"], multi)
    assert identify(multi).component is Component.ADAPTER_MULTI
