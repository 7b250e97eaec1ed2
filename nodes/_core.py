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
