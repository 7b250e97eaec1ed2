"""Loader nodes: DiT + adapter, LoRA, umT5, CLIP vision, VAE, wav2vec2, Kokoro.

Each combo lists ComfyUI's model folder(s) plus the official ``weights/`` tree(s) (see ``_common``).
Models are loaded on ComfyUI's offload device and wrapped for ``comfy.model_management``.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

from ..infinitetalk import build
from ..infinitetalk.weights import DEFAULT_VOICES, Component
from . import _common as c
from . import _core, _models
from ._api import io
from ._widgets import advanced

log = logging.getLogger(__name__)

MERGED = "none (adapter merged into the DiT file)"
PRECISIONS = list(build.PRECISIONS)
QUANTIZATIONS = list(build.QUANTIZATIONS)
ATTENTION = ["auto", "sdpa", "flash", "sage"]
BLOCK_SWAP_AUTO = -1


def _precision_input(tooltip_what: str) -> io.Combo.Input:
    return io.Combo.Input(
        "precision",
        options=PRECISIONS,
        default="auto",
        tooltip=f"Compute dtype of the {tooltip_what}. 'auto' picks bf16/fp16 on GPU (what the device supports) "
        "and fp32 on CPU. fp8 files are cast to this dtype.",
    )


def _dit_options() -> list[str]:
    return c.component_options(Component.DIT)


def _adapter_options() -> list[str]:
    options = c.component_options(Component.ADAPTER_SINGLE, Component.ADAPTER_MULTI)
    return [o for o in options if not o.startswith("(")] + [MERGED]


def _resolve_adapter(name: str):
    if name == MERGED:
        return None
    return c.resolve_component(Component.ADAPTER_SINGLE, name, Component.ADAPTER_MULTI)


class ModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfiniteTalkModelLoader",
            display_name="InfiniteTalk Model Loader",
            category=c.CATEGORY_LOADERS,
            description="Loads the Wan2.1 I2V 14B DiT together with the InfiniteTalk audio adapter "
            "(single-speaker or multi-speaker). Accepts the official sharded folder, ComfyUI's repackaged "
            "files (fp16/bf16/fp8) and Kijai's fp8-scaled files.",
            inputs=[
                io.Combo.Input(
                    "dit",
                    options=_dit_options(),
                    tooltip="Part 'dit', the Wan2.1 I2V 14B DiT: every file recognised as one (by its content) in "
                    "models/diffusion_models and its subfolders (ComfyUI's wan2.1_i2v_480p_14B_*, Kijai's "
                    "*_fp8_e4m3fn_scaled_KJ, ...) or the official weights/Wan2.1-I2V-14B-480P folder; the "
                    "preferred one first.",
                ),
                io.Combo.Input(
                    "adapter",
                    options=_adapter_options(),
                    tooltip="Parts 'adapter_single' (one speaker) and 'adapter_multi' (two speakers): "
                    "models/model_patches/wan2.1_infiniteTalk_{single,multi}_fp16.safetensors, Kijai's "
                    "Wan2_1-InfiniTetalk-Single_fp16 in diffusion_models, or the official "
                    "weights/InfiniteTalk/{single,multi} files. Pick the last entry when the DiT file "
                    "already holds the adapter.",
                ),
                _precision_input("DiT"),
                io.Combo.Input(
                    "quantization",
                    options=QUANTIZATIONS,
                    default="none",
                    tooltip="How the DiT's large weights are stored. none: in the precision above. "
                    "fp8_e4m3fn: fp8 storage, the block weights kept as float8 and cast to the precision above "
                    "layer by layer (half the memory of bf16; fp8 files load without a bf16 copy). "
                    "quanto_int8 / quanto_fp8: optimum-quanto weight quantisation with per-channel scales "
                    "(the reference's --quant int8 / fp8).",
                ),
                advanced(
                    io.Int.Input(
                        "block_swap",
                        default=BLOCK_SWAP_AUTO,
                        min=BLOCK_SWAP_AUTO,
                        max=40,
                        step=1,
                        tooltip="-1 = auto: the fewest blocks that fit the free GPU memory for the sampler's "
                        "size and frame_num (the estimate is in the log). N: keep the weights of N of the 40 "
                        "transformer blocks in CPU memory and stream them to the GPU while sampling (slower; "
                        "each block beyond the first two saves about 0.9 GB in bf16, 0.45 GB in fp8). "
                        "0 = no swap (ComfyUI streams layers itself if the model does not fit).",
                    )
                ),
                advanced(
                    io.Combo.Input(
                        "attention",
                        options=ATTENTION,
                        default="auto",
                        tooltip="Attention kernel: auto = PyTorch SDPA (picks flash/memory-efficient kernels "
                        "on CUDA itself). flash (flash-attn) and sage (SageAttention) must be installed and "
                        "need a CUDA GPU; they change numerics slightly. Checked before any weight is read.",
                    )
                ),
                advanced(
                    io.Boolean.Input(
                        "compile",
                        default=False,
                        optional=True,  # workflows saved before this input keep validating
                        tooltip="torch.compile the 40 transformer blocks: faster steps after the first "
                        "window compiles (needs a working C++/Triton toolchain).",
                    )
                ),
                io.Custom(_core.MODEL_PATCH).Input(
                    "model_patch",
                    optional=True,
                    tooltip="Optional: the InfiniteTalk adapter from ComfyUI's Load Model Patch (core's "
                    "InfiniteTalk template). When connected it is used instead of the 'adapter' file, without "
                    "reading the file again.",
                ),
            ],
            outputs=[
                io.Custom("INFINITETALK_MODEL").Output(
                    display_name="model", tooltip="DiT + adapter, managed by ComfyUI's memory manager."
                )
            ],
        )

    @classmethod
    def execute(
        cls,
        dit,
        adapter,
        precision,
        quantization,
        block_swap=BLOCK_SWAP_AUTO,
        attention="auto",
        compile=False,
        model_patch=None,
    ) -> io.NodeOutput:
        from ..infinitetalk.build import ModelOptions, build_dit, plan_dit

        if model_patch is not None:  # core's Load Model Patch: the adapter tensors are already in memory
            adapter_path = _core.adapter_reader(model_patch)
            adapter_name = _core.adapter_fingerprint(adapter_path)
        else:
            adapter_path = _resolve_adapter(adapter)
            adapter_name = str(adapter_path)
        files = SimpleNamespace(dit=c.resolve_component(Component.DIT, dit), adapter=adapter_path)
        load_device, offload = _models.devices("diffusion")
        dtype = _models.pick_dtype("diffusion", precision, load_device)
        options = ModelOptions(
            precision=build.precision_name(dtype),
            quantization=quantization,
            block_swap=build.BlockSwap.from_widget(block_swap),
            attention=attention,
            compile=bool(compile),
        )
        # options, attention kernel, files and RAM for the weights: checked before any weight is read
        plan = plan_dit(files, options, compute_device=load_device, host_copy=offload.type == "cpu")
        model = build_dit(
            files, options, operations=_comfy_operations(quantization), device=offload, plan=plan
        )
        managed = _models.wrap(
            model,
            "diffusion",
            str(files.dit),
            # comfy.ops layers stream their weights under --lowvram; quanto's layers do not (they are loaded
            # whole, or placed by block swap)
            partial_ok=not quantization.startswith("quanto"),
            dtype=dtype,
            plan=plan,  # its ModelOptions go on to the sampler's memory plan and block placement
            adapter=adapter_name,
        )
        return io.NodeOutput(managed)


def _comfy_operations(quantization: str):
    """ComfyUI's layers: they let ``--lowvram`` stream weights; ``manual_cast`` also casts fp8 storage per layer."""
    import comfy.ops

    return comfy.ops.manual_cast if quantization == "fp8_e4m3fn" else comfy.ops.disable_weight_init


class LoraLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfiniteTalkLoraLoader",
            display_name="InfiniteTalk LoRA",
            category=c.CATEGORY_LOADERS,
            description="Applies a Wan2.1 LoRA (lightx2v step-distill, FusionX, ...) to the InfiniteTalk model. "
            "Distill LoRAs want 4-8 steps, text scale 1 and audio scale about 2 in the sampler.",
            inputs=[
                io.Custom("INFINITETALK_MODEL").Input(
                    "model", tooltip="Model from InfiniteTalk Model Loader."
                ),
                io.Combo.Input(
                    "lora",
                    options=c.component_options(Component.LORA),
                    tooltip="Part 'lora': a Wan2.1 14B LoRA from models/loras (lightx2v step-distill, "
                    "FusionX; lora_down/lora_up/alpha, diff, diff_b keys).",
                ),
                io.Float.Input(
                    "strength",
                    default=1.0,
                    min=-4.0,
                    max=4.0,
                    step=0.05,
                    tooltip="Scale of the LoRA update (1 = as trained).",
                ),
            ],
            outputs=[
                io.Custom("INFINITETALK_MODEL").Output(
                    display_name="model", tooltip="Model with the LoRA applied."
                )
            ],
        )

    @classmethod
    def execute(cls, model, lora, strength) -> io.NodeOutput:
        import comfy.lora

        from ..infinitetalk.lora import load_lora_file, lora_key_map

        path = c.resolve_component(Component.LORA, lora)
        patched = model.clone()
        patched.loras = (*patched.loras, (str(path), float(strength)))
        if strength == 0:
            return io.NodeOutput(patched)
        state = load_lora_file(path)
        key_map = lora_key_map(patched.patcher.model.state_dict())
        patches = comfy.lora.load_lora(state, key_map, log_missing=False)
        if not patches:
            raise ValueError(
                f"LoRA '{lora}' matches no weight of the InfiniteTalk DiT (keys like "
                f"'{next(iter(state), '')}'): use a LoRA made for Wan2.1 I2V 14B"
            )
        patched.patcher.add_patches(patches, strength)
        log.info("LoRA %s: %d weights patched (strength %.2f)", path.name, len(patches), strength)
        return io.NodeOutput(patched)


def _encoder_loader(node_id, display, description, component, what, role, loader_name, tooltip):
    """Build a loader node class for one encoder (same inputs: file + precision)."""

    class EncoderLoader(io.ComfyNode):
        @classmethod
        def define_schema(cls) -> io.Schema:
            options = c.component_options(component)
            return io.Schema(
                node_id=node_id,
                display_name=display,
                category=c.CATEGORY_LOADERS,
                description=description,
                inputs=[
                    io.Combo.Input(
                        "name",
                        options=options,
                        tooltip=tooltip,
                    ),
                    _precision_input(what),
                ],
                outputs=[
                    io.Custom(f"INFINITETALK_{role.upper()}").Output(
                        display_name=role.lower(), tooltip=f"The {what}, managed by ComfyUI."
                    )
                ],
            )

        @classmethod
        def execute(cls, name, precision) -> io.NodeOutput:
            from ..infinitetalk import encoders

            path = c.resolve_component(component, name)
            managed_role = {"TEXT_ENCODER": "text", "VAE": "vae"}.get(
                role, "vision" if role == "CLIP_VISION" else "audio"
            )
            load_device, offload = _models.devices(managed_role)
            dtype = _models.pick_dtype(managed_role, precision, load_device)
            extras = c.loader_extras(component, path)  # e.g. the umT5 tokenizer for Kijai's file
            obj = getattr(encoders, loader_name)(path, device=offload, dtype=dtype, **extras)
            return io.NodeOutput(_models.wrap(obj, managed_role, str(path), dtype=dtype))

    EncoderLoader.__name__ = EncoderLoader.__qualname__ = node_id
    return EncoderLoader


TextEncoderLoader = _encoder_loader(
    "InfiniteTalkTextEncoderLoader",
    "InfiniteTalk Text Encoder Loader",
    "Loads the umT5-XXL text encoder (ComfyUI's umt5_xxl_*.safetensors or the official "
    "models_t5_umt5-xxl-enc-bf16.pth with its google/umt5-xxl tokenizer).",
    Component.TEXT_ENCODER,
    "text encoder",
    "TEXT_ENCODER",
    "load_text_encoder",
    "Part 'text_encoder', umT5-XXL: models/text_encoders/umt5_xxl_fp16.safetensors (or fp8_e4m3fn_scaled), "
    "Kijai's umt5-xxl-enc-bf16 (tokenizer from ComfyUI-WanVideoWrapper), or "
    "weights/Wan2.1-I2V-14B-480P/models_t5_umt5-xxl-enc-bf16.pth.",
)
ClipVisionLoader = _encoder_loader(
    "InfiniteTalkClipVisionLoader",
    "InfiniteTalk CLIP Vision Loader",
    "Loads the CLIP ViT-H/14 image encoder (ComfyUI's clip_vision_h.safetensors or the official open-clip .pth).",
    Component.CLIP,
    "CLIP vision encoder",
    "CLIP_VISION",
    "load_clip_vision",
    "Part 'clip', CLIP ViT-H/14: models/clip_vision/clip_vision_h.safetensors or "
    "weights/Wan2.1-I2V-14B-480P/models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth.",
)
VAELoader = _encoder_loader(
    "InfiniteTalkVAELoader",
    "InfiniteTalk VAE Loader",
    "Loads the Wan 2.1 VAE (causal 3D, 16 latent channels).",
    Component.VAE,
    "VAE",
    "VAE",
    "load_vae",
    "Part 'vae', the Wan 2.1 VAE: models/vae/wan_2.1_vae.safetensors, Kijai's Wan2_1_VAE_bf16/fp32 (subfolders "
    "fine) or weights/Wan2.1-I2V-14B-480P/Wan2.1_VAE.pth.",
)
AudioEncoderLoader = _encoder_loader(
    "InfiniteTalkAudioEncoderLoader",
    "InfiniteTalk Audio Encoder Loader",
    "Loads the chinese-wav2vec2-base speech encoder that drives the lips.",
    Component.AUDIO_ENCODER,
    "audio encoder",
    "AUDIO_ENCODER",
    "load_audio_encoder",
    "Part 'audio_encoder', chinese-wav2vec2-base: wav2vec2-chinese-base_fp16.safetensors in models/audio_encoders "
    "or models/wav2vec2, the WanVideoWrapper's models/transformers/TencentGameMate/chinese-wav2vec2-base, or the "
    "official weights/chinese-wav2vec2-base folder.",
)


def kokoro_options() -> list[str]:
    return c.component_options(Component.TTS)


def voice_options() -> list[str]:
    """Voice names (``voices/<name>.pt``) found next to any Kokoro model."""
    names: set[str] = set()
    for entry in c.folder_entries(c.KOKORO_FOLDER):
        parts = entry.replace("\\", "/").split("/")
        if len(parts) >= 2 and parts[-2] == "voices" and parts[-1].endswith(".pt"):
            names.add(parts[-1][:-3])
    for entry in c.official_entries("*/voices/*.pt"):
        names.add(entry.rsplit("/", 1)[-1][:-3])
    return sorted(names) or [DEFAULT_VOICES[1]]


def default_voice(voices: list[str], speaker: int = 1) -> str:
    """The registry's default voice of ``speaker`` when it is installed, else the first (speaker 1) or the last."""
    wanted = DEFAULT_VOICES[speaker]
    return wanted if wanted in voices else voices[0 if speaker == 1 else -1]


class KokoroLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfiniteTalkKokoroLoader",
            display_name="InfiniteTalk Kokoro TTS Loader",
            category=c.CATEGORY_LOADERS,
            description="Loads the Kokoro-82M text-to-speech model (24 kHz) from models/kokoro or weights/Kokoro-82M. "
            "Voices are the voices/*.pt files next to it.",
            inputs=[
                io.Combo.Input(
                    "name",
                    options=kokoro_options(),
                    tooltip="Part 'tts': kokoro-v1_0.pth in models/kokoro (with config.json and voices/ beside "
                    "it), or the official weights/Kokoro-82M folder.",
                ),
            ],
            outputs=[
                io.Custom("INFINITETALK_KOKORO").Output(
                    display_name="kokoro", tooltip="The Kokoro TTS model."
                )
            ],
        )

    @classmethod
    def execute(cls, name) -> io.NodeOutput:
        from ..infinitetalk.tts import KokoroTTS

        path = c.resolve_component(Component.TTS, name)
        model_dir = path if path.is_dir() else path.parent
        _, offload = _models.devices("tts")
        tts = KokoroTTS(model_dir, device=offload, voice_files=False)  # voices from prompts: names only
        return io.NodeOutput(_models.wrap(tts, "tts", str(model_dir)))


NODES = [
    ModelLoader,
    LoraLoader,
    TextEncoderLoader,
    ClipVisionLoader,
    VAELoader,
    AudioEncoderLoader,
    KokoroLoader,
]
