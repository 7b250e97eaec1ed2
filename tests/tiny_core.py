"""ComfyUI 0.3.75's own encoder classes on tiny checkpoints (tests only).

0.3.75's loaders size two of the three models from fixed JSON configs, whatever the file holds:
Load CLIP (type wan) builds umT5-XXL (``comfy/text_encoders/umt5_config_xxl.json``: d_model 4096, 24 layers,
picked only when ``encoder.block.23...wi_1`` is 4096 wide), Load CLIP Vision builds ViT-H/14 (picked when the
file has a 31st layer). No tiny file fits them. These helpers build the same classes (``comfy.sd.CLIP`` with
``comfy.text_encoders.wan``'s model and tokenizer, ``comfy.clip_vision.ClipVisionModel``) with the dimensions
read from the file's shapes, through the configuration hooks those classes have (``<name>_model_config``
model option, the JSON config path); then they load the file as ComfyUI does. The VAE needs nothing:
``comfy.sd.VAE`` takes its width from the file.

The test server loads the same sizing through ``tests/integration/comfy_plugins/tiny_core_sizes`` (a
custom-node folder only the tests add): there 0.3.75's own Load CLIP and Load CLIP Vision nodes run, and only
for files their detection does not recognise are the models sized from the file. Standalone: imports only
ComfyUI, torch and the standard library.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

UMT5_CONFIG = {  # what comfy/text_encoders/umt5_config_xxl.json says besides the sizes
    "dense_act_fn": "gelu_pytorch_tanh",
    "is_gated_act": True,
    "layer_norm_epsilon": 1e-06,
    "model_type": "umt5",
    "pad_token_id": 0,
    "eos_token_id": 1,
}


HEADS_BY_WIDTH = {768: 12, 1024: 16, 1280: 16, 1408: 16, 1664: 16}


def _count(sd: dict, pattern: str) -> int:
    found = {int(m.group(1)) for k in sd if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def umt5_config(sd: dict) -> dict:
    """The umT5 config of a state dict in ComfyUI's keys (every size from the shapes)."""
    vocab, d_model = sd["shared.weight"].shape
    heads = sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape[1]
    inner = sd["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0]
    return {
        **UMT5_CONFIG,
        "d_model": d_model,
        "vocab_size": vocab,
        "num_layers": _count(sd, r"encoder\.block\.(\d+)\."),
        "num_heads": heads,
        "d_kv": inner // heads,
        "d_ff": sd["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"].shape[0],
        "relative_attention_num_buckets": sd[
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        ].shape[0],
    }


def clip_vision_config(sd: dict) -> dict:
    """A ComfyUI CLIP vision JSON config (as comfy/clip_vision_config_h.json) from a state dict's shapes."""
    width, _, patch, _ = sd["vision_model.embeddings.patch_embedding.weight"].shape
    positions = sd["vision_model.embeddings.position_embedding.weight"].shape[0]
    config = json.loads((_comfy_dir() / "comfy" / "clip_vision_config_h.json").read_text())
    config.update(
        hidden_size=width,
        patch_size=patch,
        image_size=patch * round((positions - 1) ** 0.5),
        intermediate_size=sd["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_attention_heads=HEADS_BY_WIDTH.get(width, max(1, width // 16)),  # as infinitetalk.encoders.clip
        num_hidden_layers=_count(sd, r"vision_model\.encoder\.layers\.(\d+)\."),
        projection_dim=sd["visual_projection.weight"].shape[0],
    )
    return config


def _comfy_dir() -> Path:
    import comfy.clip_vision

    return Path(comfy.clip_vision.__file__).resolve().parent.parent


def is_small_umt5(sd: dict) -> bool:
    """A umT5 state dict that 0.3.75's detection does not take for umT5-XXL."""
    return "shared.weight" in sd and "encoder.block.23.layer.1.DenseReluDense.wi_1.weight" not in sd


def clip_from_sd(sd: dict, model_options: dict | None = None):
    """``comfy.sd.CLIP`` with comfy.text_encoders.wan's umT5 model and tokenizer, sized from ``sd``."""
    import comfy.sd
    import comfy.text_encoders.sd3_clip
    import comfy.text_encoders.wan
    import comfy.utils

    target = type("ClipTarget", (), {})()
    target.params = {}
    target.clip = comfy.text_encoders.wan.te(**comfy.text_encoders.sd3_clip.t5_xxl_detect(sd))
    target.tokenizer = comfy.text_encoders.wan.WanT5Tokenizer
    clip = comfy.sd.CLIP(
        target,
        tokenizer_data={"spiece_model": sd.get("spiece_model")},
        parameters=comfy.utils.calculate_parameters(sd),
        model_options={**(model_options or {}), "umt5xxl_model_config": umt5_config(sd)},
    )
    missing, _ = clip.load_sd(sd)
    if missing:
        raise ValueError(f"umT5 weights missing: {missing[:5]}")
    return clip


def core_clip(path: Path):
    """``comfy.sd.CLIP`` for umT5 (Load CLIP, type wan) over ``path``."""
    import comfy.utils

    return clip_from_sd(comfy.utils.load_torch_file(str(path)))


def clip_vision_from_sd(sd: dict, workdir: Path):
    """``comfy.clip_vision.ClipVisionModel`` sized from ``sd`` (its JSON config written to ``workdir``)."""
    import comfy.clip_vision

    config = (
        Path(workdir)
        / f"clip_vision_config_{len(sd)}_{sd['vision_model.embeddings.patch_embedding.weight'].shape[0]}.json"
    )
    config.write_text(json.dumps(clip_vision_config(sd)))
    model = comfy.clip_vision.ClipVisionModel(str(config))
    missing, _ = model.load_sd(sd)
    if missing:
        raise ValueError(f"CLIP vision weights missing: {missing[:5]}")
    return model


def core_clip_vision(path: Path, workdir: Path):
    """``comfy.clip_vision.ClipVisionModel`` (Load CLIP Vision) over ``path``."""
    import comfy.utils

    return clip_vision_from_sd(comfy.utils.load_torch_file(str(path)), workdir)


def core_vae(path: Path):
    """``comfy.sd.VAE`` (Load VAE) over ``path``, exactly as the loader builds it."""
    import comfy.sd
    import comfy.utils

    return comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(path)))
