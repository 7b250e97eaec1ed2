"""Core ComfyUI's InfiniteTalk sockets, turned into what this pack's library uses.

ComfyUI ships its own InfiniteTalk path (``WanInfiniteTalkToVideo``). Its loaders produce:

- ``MODEL_PATCH`` (Load Model Patch, ``models/model_patches``): a model patcher around
  ``MultiTalkModelPatch``, whose ``audio_proj.*`` / ``blocks.N.audio_cross_attn.*`` / ``blocks.N.norm_x.*``
  tensors carry exactly the adapter file's key names;
- ``AUDIO_ENCODER`` (Load Audio Encoder, ``models/audio_encoders``): ``AudioEncoderModel`` with a ``.model``
  wav2vec2 in Hugging Face key names (the positional conv as ``parametrizations.weight.original0/1``);
- ``AUDIO_ENCODER_OUTPUT`` (Audio Encoder Encode): ``{"encoded_audio", "encoded_audio_all_layers",
  "audio_samples"}``, hidden states computed at the CNN rate (50 Hz) from the raw waveform.

The first two hold weights: the pack reads their tensors (no second copy of the file is read) and runs
its own reference-exact code on them. The third holds *features*, already computed differently from the
reference (transformer at 50 Hz, no loudness normalisation): they are converted the way core does it and
the difference is stated in the tooltips and the README.
"""

from __future__ import annotations

import hashlib
import logging

import torch

from ..infinitetalk.encoders.clip import CLIP_MEAN, CLIP_STD
from . import _models

log = logging.getLogger(__name__)

MODEL_PATCH = "MODEL_PATCH"
AUDIO_ENCODER = "AUDIO_ENCODER"
AUDIO_ENCODER_OUTPUT = "AUDIO_ENCODER_OUTPUT"
_PATCH_NAME = "MODEL_PATCH (Load Model Patch)"
_ENCODER_NAME = "AUDIO_ENCODER (Load Audio Encoder)"


def _module_of(obj, what: str, hint: str) -> torch.nn.Module:
    """The ``torch.nn.Module`` a core object wraps (``patcher.model`` or ``.model``)."""
    model = getattr(obj, "model", None)
    if isinstance(model, torch.nn.Module):
        return model
    raise ValueError(f"{what}: got {type(obj).__name__}, which holds no model; {hint}")


def adapter_reader(model_patch):
    """A checkpoint reader over the InfiniteTalk adapter held by core's ``MODEL_PATCH``.

    Raises:
        ValueError: the patch is not an InfiniteTalk adapter (one line naming the input and the fix).
    """
    from ..infinitetalk.loading.dit import ADAPTER_ANCHOR
    from ..infinitetalk.loading.state_dict import reader_from_tensors

    hint = "load wan2.1_infiniteTalk_single_fp16.safetensors (or _multi_) with Load Model Patch"
    module = _module_of(model_patch, "model_patch", hint)
    tensors = module.state_dict()
    if ADAPTER_ANCHOR not in tensors:
        raise ValueError(
            f"model_patch: the connected patch is a {type(module).__name__}, not an InfiniteTalk adapter "
            f"(no '{ADAPTER_ANCHOR}'); {hint}"
        )
    return reader_from_tensors(_PATCH_NAME, tensors, prefixes=(), anchor=ADAPTER_ANCHOR)


def adapter_fingerprint(reader) -> str:
    """A short content hash of an in-memory adapter (stands for its file name in resume fingerprints)."""
    h = hashlib.sha256()
    for key in sorted(reader.keys())[:8]:
        h.update(key.encode())
        h.update(reader.get(key, "cpu", torch.float32).numpy().tobytes()[:4096])
    return f"model_patch:{h.hexdigest()[:16]}"


def audio_encoder(core_encoder) -> _models.Managed:
    """This pack's wav2vec2 (25 Hz, reference-exact) built from the tensors of core's ``AUDIO_ENCODER``.

    The conversion is kept on the core object, so queueing again reuses it.
    """
    cached = getattr(core_encoder, "_infinitetalk_encoder", None)
    if cached is not None:
        return cached
    from ..infinitetalk.encoders.wav2vec2 import audio_encoder_from_reader
    from ..infinitetalk.loading.state_dict import reader_from_tensors

    hint = "connect Load Audio Encoder with a wav2vec2 file (wav2vec2-chinese-base_fp16.safetensors)"
    module = _module_of(core_encoder, "audio_encoder", hint)
    reader = reader_from_tensors(_ENCODER_NAME, module.state_dict(), prefixes=("wav2vec2.",))
    load_device, offload = _models.devices("audio")
    dtype = _models.pick_dtype("audio", "auto", load_device)
    try:
        encoder = audio_encoder_from_reader(reader, device=offload, dtype=dtype)
    except ValueError as err:
        raise ValueError(f"audio_encoder: {err}; {hint}") from None
    managed = _models.wrap(encoder, "audio", _ENCODER_NAME, dtype=dtype)
    try:
        core_encoder._infinitetalk_encoder = managed
    except AttributeError:  # slotted or frozen objects: convert again next time
        pass
    return managed


def is_audio_encoder_output(value) -> bool:
    return isinstance(value, dict) and "encoded_audio_all_layers" in value


def audio_embeds(output):
    """``AudioEmbedding`` (one speaker, no soundtrack) from core's ``AUDIO_ENCODER_OUTPUT``.

    Core's hidden states were computed at 50 Hz; they are interpolated to the reference's 25 fps frame count
    (see :func:`infinitetalk.encoders.wav2vec2.features_from_50hz`). No waveform comes with them: connect the
    audio to Video Combine for the soundtrack.
    """
    from ..infinitetalk.encoders.wav2vec2 import features_from_50hz
    from ..infinitetalk.pipeline import AudioEmbedding

    samples = output.get("audio_samples")
    if not isinstance(samples, int) or samples <= 0:
        raise ValueError(
            "audio_embeds: the AUDIO_ENCODER_OUTPUT carries no 'audio_samples' count; connect Audio Encoder Encode"
        )
    features = features_from_50hz(output["encoded_audio_all_layers"], samples)  # (L, layers, C)
    log.info(
        "audio from AUDIO_ENCODER_OUTPUT: %d frames (hidden states at 50 Hz interpolated to 25 fps, "
        "not loudness-normalised; InfiniteTalk Audio Embed computes the reference's features)",
        features.shape[0],
    )
    return AudioEmbedding(features[None], None, int(features.shape[0]))


# ------------------------------------------------------------------------------------------------------
# ComfyUI's own encoders: CLIP (umT5 from Load CLIP, type wan), VAE (Load VAE), CLIP_VISION (Load CLIP Vision)
#
# These hold ComfyUI models that ComfyUI's memory manager already handles; the pack calls their own encode
# and decode paths and converts the results to what the InfiniteTalk model was trained on. Differences from
# the reference's computation (README, "ComfyUI's own encoders"):
# - text: ComfyUI pads umT5 tokens to 512 and zeroes the padding; the pack keeps the real tokens as the
#   reference does (equal to it). The prompt is cleaned as the reference does and passed with weights off, so
#   '(word:1.2)' stays text. ComfyUI does not cut prompts at 512 tokens (the reference does).
# - VAE: ComfyUI returns the raw posterior mean; the pack normalises it with ComfyUI's Wan 2.1 latent format
#   (process_in / process_out), as the reference does. ComfyUI falls back to tiled coding when memory is short.
# - CLIP vision: the pack prepares the image as the reference does (bicubic to 224 x 224, no crop, no 8-bit
#   rounding; ComfyUI's encode_image crops and rounds) and runs ComfyUI's model on it.
CLIP = "CLIP"
VAE = "VAE"
CLIP_VISION = "CLIP_VISION"
_CLIP_NAME = "CLIP (Load CLIP, type wan)"
_VAE_NAME = "VAE (Load VAE)"
_CLIP_VISION_NAME = "CLIP_VISION (Load CLIP Vision)"
UMT5_KEY = "umt5xxl"  # ComfyUI's token dict key for umT5 (comfy.text_encoders.wan)
PAD_TOKEN = 0


def is_core_clip(obj) -> bool:
    """ComfyUI's ``CLIP`` (comfy.sd.CLIP, also what ComfyUI-GGUF's CLIP loaders return)."""
    return callable(getattr(obj, "tokenize", None)) and callable(getattr(obj, "encode_from_tokens", None))


def is_core_vae(obj) -> bool:
    return hasattr(obj, "first_stage_model") and callable(getattr(obj, "decode", None))


def is_core_clip_vision(obj) -> bool:
    return callable(getattr(obj, "encode_image", None)) and hasattr(obj, "patcher")


def _short_hash(module: torch.nn.Module, prefix: str) -> str:
    """A content hash of a few tensors (stands for the file name in resume fingerprints)."""
    h = hashlib.sha256()
    state = module.state_dict()
    for key in sorted(state)[:8]:
        h.update(key.encode())
        h.update(state[key].detach().float().cpu().numpy().tobytes()[:4096])
    return f"{prefix}:{h.hexdigest()[:16]}"


class CoreTextEncoder:
    """``encode(list[str])`` of the pack's text encoder over ComfyUI's umT5 ``CLIP``: one ``(L_i, 4096)``
    tensor per prompt, trimmed to its real tokens (``</s>`` included) as the reference does."""

    def __init__(self, clip):
        self.clip = clip

    def tokens(self, prompt: str) -> dict:
        from ..infinitetalk.encoders.text import clean_prompt

        tokens = self.clip.tokenize(clean_prompt(prompt), disable_weights=True)
        if UMT5_KEY not in tokens:
            raise ValueError(
                f"text_encoder: the connected CLIP is not umT5 (its tokens are {sorted(tokens)}); load "
                "umt5_xxl_fp16.safetensors (or _fp8_e4m3fn_scaled) with Load CLIP, type wan"
            )
        return tokens

    @staticmethod
    def real_length(tokens: dict) -> int:
        """Tokens before ComfyUI's padding (the prompt and its ``</s>``)."""
        ids = [t[0] if isinstance(t, tuple) else t for batch in tokens[UMT5_KEY] for t in batch]
        n = len(ids)
        while n > 0 and isinstance(ids[n - 1], int) and ids[n - 1] == PAD_TOKEN:
            n -= 1
        return n

    def encode(self, prompts: list[str]) -> list[torch.Tensor]:
        from ..infinitetalk.encoders.text import TEXT_LEN

        out = []
        for prompt in prompts:
            tokens = self.tokens(prompt)
            n = self.real_length(tokens)
            if n > TEXT_LEN:
                log.warning(
                    "InfiniteTalk Text Encode: the prompt has %d umT5 tokens; the reference cuts it to %d, "
                    "ComfyUI's CLIP encodes it whole (the first %d are kept)",
                    n,
                    TEXT_LEN,
                    TEXT_LEN,
                )
            cond = self.clip.encode_from_tokens(tokens)  # (1, max(512, n), 4096), padding zeroed
            out.append(cond[0, : min(n, TEXT_LEN)])
        return out


def text_encoder(clip) -> _models.Managed:
    """ComfyUI's ``CLIP`` as the pack's text encoder (ComfyUI's patcher: its memory manager places it)."""
    patcher = getattr(clip, "patcher", None)
    if patcher is None:
        raise ValueError(
            "text_encoder: the connected CLIP has no model patcher; connect Load CLIP (type wan)"
        )
    return _models.Managed(CoreTextEncoder(clip), patcher, "text", _CLIP_NAME)


class CoreVAE:
    """``encode``/``decode`` of the pack's Wan VAE (normalised latents, video in [-1, 1] as ``(B, 3, T, H,
    W)``) over ComfyUI's ``VAE``."""

    dtype = torch.float32  # what the pipeline hands in; ComfyUI casts to the VAE's own dtype

    def __init__(self, vae):
        import comfy.latent_formats

        self.vae = vae
        self.latent_format = comfy.latent_formats.Wan21()

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``(1, 3, T, H, W)`` in [-1, 1] -> ``(1, 16, 1 + (T-1)//4, H/8, W/8)`` normalised latents."""
        if video.dim() != 5 or video.shape[0] != 1 or video.shape[1] != 3:
            raise ValueError(f"VAE input must be (1, 3, T, H, W) in [-1, 1], got {tuple(video.shape)}")
        pixels = (video[0].float().permute(1, 2, 3, 0) * 0.5 + 0.5).cpu()  # (T, H, W, 3) in [0, 1]
        raw = self.vae.encode(pixels)  # (1, 16, T', h, w): the posterior mean, not normalised
        return self.latent_format.process_in(raw.float()).to(video.device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised ``(1, 16, T', h, w)`` -> ``(1, 3, 1 + 4(T'-1), 8h, 8w)`` in [-1, 1]."""
        raw = self.latent_format.process_out(latents.float().cpu())
        frames = self.vae.decode(raw)  # (1, T, H, W, 3) in [0, 1]
        if frames.dim() == 4:  # a ComfyUI that returns the frames as an image batch
            frames = frames[None]
        return (frames.float().movedim(-1, 1) * 2.0 - 1.0).to(latents.device)


def vae(core_vae) -> _models.Managed:
    """ComfyUI's Wan 2.1 ``VAE`` as the pack's VAE.

    Raises:
        ValueError: another VAE (one line naming the input and the fix).
    """
    channels, dims = getattr(core_vae, "latent_channels", None), getattr(core_vae, "latent_dim", None)
    if channels != 16 or dims != 3:
        raise ValueError(
            f"vae: the connected VAE has {channels} latent channels ({dims}-D latents), not the Wan 2.1 "
            "video VAE's 16; load wan_2.1_vae.safetensors with Load VAE"
        )
    module = core_vae.first_stage_model
    return _models.Managed(CoreVAE(core_vae), core_vae.patcher, "vae", _short_hash(module, "vae"))


class CoreClipVision:
    """``encode(image)`` of the pack's CLIP encoder over ComfyUI's ``CLIP_VISION``: ``(B, 3, H, W)`` in
    [-1, 1] -> the penultimate block's tokens ``(B, 257, C)`` (no post-norm), as the reference's
    ``use_31_block``.

    The image is prepared as the reference does (bicubic to 224 x 224, no crop, no rounding) and handed to
    ComfyUI's model, loaded by ComfyUI's memory manager. A ComfyUI whose model takes other arguments gets
    the image through ``encode_image`` instead, which rounds the resized pixels to 8 bits first.
    """

    def __init__(self, clip_vision):
        self.clip_vision = clip_vision
        self.image_size = int(getattr(clip_vision, "image_size", 224))
        self.mean = getattr(clip_vision, "image_mean", CLIP_MEAN)
        self.std = getattr(clip_vision, "image_std", CLIP_STD)

    def resized(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 224, 224)`` in [0, 1], resized as the reference does."""
        import torch.nn.functional as F

        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"CLIP image must be (B, 3, H, W) in [-1, 1], got {tuple(image.shape)}")
        size = (self.image_size, self.image_size)
        return F.interpolate(image.float(), size=size, mode="bicubic", align_corners=False) * 0.5 + 0.5

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        import comfy.model_management as mm

        x = self.resized(image.cpu())
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        mm.load_model_gpu(self.clip_vision.patcher)
        device = self.clip_vision.load_device
        try:
            out = self.clip_vision.model(pixel_values=((x - mean) / std).to(device), intermediate_output=-2)
            features = out[1]  # (B, 257, C): the hidden states after the last block but one
        except TypeError:
            features = self.encode_image(x)
        return features.float().to(image.device)

    def encode_image(self, resized: torch.Tensor) -> torch.Tensor:
        """Through ``encode_image`` (8-bit rounding of the resized pixels)."""
        out = self.clip_vision.encode_image(resized.movedim(1, -1), crop=False)
        return out["penultimate_hidden_states"]


def clip_vision(core_clip_vision) -> _models.Managed:
    model = getattr(core_clip_vision, "model", None)
    if not isinstance(model, torch.nn.Module):
        raise ValueError("clip_vision: the connected CLIP_VISION holds no model; connect Load CLIP Vision")
    return _models.Managed(
        CoreClipVision(core_clip_vision),
        core_clip_vision.patcher,
        "vision",
        _short_hash(model, "clip_vision"),
    )


def pack_vae(value) -> _models.Managed:
    """The Sampler's ``vae`` input: the pack's VAE as it is, ComfyUI's converted."""
    return vae(value) if is_core_vae(value) else value


def pack_clip_vision(value) -> _models.Managed:
    return clip_vision(value) if is_core_clip_vision(value) else value


def pack_text_encoder(value) -> _models.Managed:
    return text_encoder(value) if is_core_clip(value) else value
