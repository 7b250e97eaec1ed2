"""wav2vec2 audio encoder (transformers ``Wav2Vec2Model``) running at the video frame rate.

``AudioEncoder.encode(wave_16k)`` follows the reference (``src/audio_analysis/wav2vec2.py`` and
``get_embedding`` in ``generate_infinitetalk.py``):

1. waveform normalisation when the checkpoint's ``preprocessor_config.json`` says ``do_normalize``
   (zero mean, unit variance; off for chinese-wav2vec2-base);
2. CNN feature encoder (320x downsampling, about 50 Hz);
3. linear interpolation of the CNN features to ``L = int(len(wave) / 16000 * 25)`` frames
   (``align_corners=True``), so the transformer runs at 25 Hz, one frame per video frame;
4. feature projection, positional convolution, encoder layer norm (post-norm models), then each
   transformer layer run *explicitly*, keeping every layer's output (the reference's
   ``hidden_states[1:]``; transformers 5 no longer returns hidden states from ``model.encoder``).
   Stable-layer-norm models (large/XLSR) apply the final layer norm to the last layer's output,
   as transformers' ``hidden_states`` does.

Output: ``(L, num_layers, hidden)`` float32 on the CPU, like the reference.

Layouts accepted:

- Hugging Face folder (``chinese-wav2vec2-base/``: ``config.json``, ``model.safetensors`` or
  ``pytorch_model.bin``, ``preprocessor_config.json``); keys may carry ``wav2vec2.`` (pre-training
  checkpoints: ``quantizer.*``/``project_*`` are ignored);
- a single file: Kijai ``wav2vec2-chinese-base_fp16.safetensors`` (``wav2vec2.`` prefix) in ComfyUI's
  ``models/audio_encoders/``, or a file in ComfyUI's own (un-prefixed, HF-named) layout.

Single files carry no config: it is inferred from shapes (width, layers, FFN width, conv widths and
kernels, conv bias, conv norm type, positional conv kernel and groups). Not in the weights and
therefore assumed: conv strides (the standard wav2vec2 stack ``(5,2,2,2,2,2,2)`` for kernels
``(10,3,3,3,3,2,2)``; any other stack is refused), heads = width / 64 (768 -> 12, 1024 -> 16; width 16
per head below 64 for tiny models), and ``do_stable_layer_norm`` / ``do_normalize`` = conv norm is
layer norm (base models: group norm, post-norm, no waveform normalisation; large/XLSR: layer norm,
stable norm, normalised waveform), unless a ``preprocessor_config.json`` sits next to the file.
The positional conv weight is accepted as ``weight_g``/``weight_v``, ``parametrizations.weight.
original0/1`` or an already folded ``weight``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import VIDEO_FPS, AudioEncoderConfig
from ..errors import CheckpointError, InputError
from ..loading.state_dict import CheckpointReader, open_checkpoint
from . import FrozenEncoder, LazyStateDict, build_module, check_materialized

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
STANDARD_KERNELS = (10, 3, 3, 3, 3, 2, 2)
STANDARD_STRIDES = (5, 2, 2, 2, 2, 2, 2)
MIN_SAMPLES = 400  # receptive field of the standard CNN stack: shorter input gives no frame
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.bin")
_DROP_PREFIXES = (
    "quantizer.",
    "project_q.",
    "project_hid.",
    "lm_head.",
    "dropout_features",
    "classifier.",
    "projector.",
)
_POS = "encoder.pos_conv_embed.conv."


def num_video_frames(num_samples: int, sample_rate: int = SAMPLE_RATE, fps: int = VIDEO_FPS) -> int:
    """Video frames covered by ``num_samples`` of audio, as the reference: ``int(n / sr * fps)``."""
    return int(num_samples / sample_rate * fps)


def linear_interpolation(features: torch.Tensor, length: int) -> torch.Tensor:
    """``(B, T, C)`` -> ``(B, length, C)``, linear, ``align_corners=True`` (ends map onto ends)."""
    return F.interpolate(features.transpose(1, 2), size=length, mode="linear", align_corners=True).transpose(
        1, 2
    )


def normalize_wave(wave: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance (the wav2vec2 feature extractor's ``do_normalize``)."""
    return (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)


# --------------------------------------------------------------------------------------------
# keys and config
# --------------------------------------------------------------------------------------------
def model_keys(keys: list[str]) -> dict[str, str]:
    """Stripped HF key -> source key: drops the ``wav2vec2.`` prefix and pre-training heads."""
    prefixed = any(k.startswith("wav2vec2.") for k in keys)
    out = {}
    for key in keys:
        name = key[len("wav2vec2.") :] if prefixed and key.startswith("wav2vec2.") else key
        if prefixed and name == key or name.startswith(_DROP_PREFIXES):
            continue
        out[name] = key
    if (
        "feature_projection.projection.weight" not in out
        or "encoder.layers.0.attention.q_proj.weight" not in out
    ):
        return {}
    return out


def _pos_conv_shape(keys: dict[str, str], source: CheckpointReader) -> torch.Size:
    """Shape (hidden, hidden / groups, kernel) of the positional conv weight, whatever its naming."""
    for name in ("weight_v", "parametrizations.weight.original1", "weight"):
        if _POS + name in keys:
            return source.shape(keys[_POS + name])
    raise CheckpointError(
        f"checkpoint {source.path} has no positional conv weight ({_POS}*): not a wav2vec2 model"
    )


def infer_wav2vec2_config(keys: dict[str, str], source: CheckpointReader):
    """``Wav2Vec2Config`` from the shapes of a single file (see module docstring for assumptions)."""
    from transformers import Wav2Vec2Config

    def shape(name: str) -> torch.Size:
        return source.shape(keys[name])

    convs = sorted(
        int(m.group(1))
        for k in keys
        if (m := re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.conv\.weight", k))
    )
    kernels = tuple(shape(f"feature_extractor.conv_layers.{i}.conv.weight")[2] for i in convs)
    if kernels != STANDARD_KERNELS:
        raise CheckpointError(
            f"checkpoint {source.path}: wav2vec2 conv kernels {kernels} are not the standard stack "
            f"{STANDARD_KERNELS}; strides cannot be inferred, add its config.json next to it"
        )
    hidden = shape("feature_projection.projection.weight")[0]
    layers = 1 + max(int(k.split(".")[2]) for k in keys if k.startswith("encoder.layers."))
    pos = _pos_conv_shape(keys, source)
    layer_norm_convs = "feature_extractor.conv_layers.1.layer_norm.weight" in keys
    return Wav2Vec2Config(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64 if hidden % 64 == 0 else max(1, hidden // 16),
        intermediate_size=shape("encoder.layers.0.feed_forward.intermediate_dense.weight")[0],
        conv_dim=[shape(f"feature_extractor.conv_layers.{i}.conv.weight")[0] for i in convs],
        conv_kernel=list(kernels),
        conv_stride=list(STANDARD_STRIDES),
        conv_bias=all(f"feature_extractor.conv_layers.{i}.conv.bias" in keys for i in convs),
        feat_extract_norm="layer" if layer_norm_convs else "group",
        do_stable_layer_norm=layer_norm_convs,
        num_conv_pos_embeddings=pos[2],
        num_conv_pos_embedding_groups=hidden // pos[1],
        apply_spec_augment=False,
        mask_time_prob=0.0,
    )


def _state(keys: dict[str, str], source: CheckpointReader, expected: set[str]) -> LazyStateDict:
    """Lazy HF state dict with the positional-conv weight renamed to what the model expects."""
    state: LazyStateDict = {
        name: (lambda s=src: source.get(s))
        for name, src in keys.items()
        if not name.startswith(_POS + "weight")
        and not name.startswith(_POS + "parametrizations")
        and (name != "masked_spec_embed" or name in expected)
    }
    g_name, v_name = (
        (_POS + "parametrizations.weight.original0", _POS + "parametrizations.weight.original1")
        if _POS + "parametrizations.weight.original0" in expected
        else (_POS + "weight_g", _POS + "weight_v")
    )
    g, v = _pos_conv_parts(keys, source)
    state[g_name], state[v_name] = g, v
    return state


def _pos_conv_parts(keys: dict[str, str], source: CheckpointReader):
    """Lazy (g, v) weight-norm parts of the positional conv (dim=2), from any naming."""
    for g_name, v_name in (
        ("weight_g", "weight_v"),
        ("parametrizations.weight.original0", "parametrizations.weight.original1"),
    ):
        if _POS + g_name in keys and _POS + v_name in keys:
            g_key, v_key = keys[_POS + g_name], keys[_POS + v_name]
            return (lambda g=g_key: source.get(g)), (lambda v=v_key: source.get(v))
    folded = keys[_POS + "weight"]  # plain weight: v = weight, g = its norm per kernel tap

    def norm() -> torch.Tensor:
        return torch.linalg.vector_norm(source.get(folded).float(), dim=(0, 1), keepdim=True)

    return norm, (lambda: source.get(folded))


# --------------------------------------------------------------------------------------------
# chunked CNN feature encoder
# --------------------------------------------------------------------------------------------
def _receptive_field(convs) -> tuple[int, int]:
    """(receptive field, total stride) in samples of a stack of unpadded 1-D convolutions."""
    field, stride = 1, 1
    for conv in convs:
        field += (conv.kernel_size[0] - 1) * stride
        stride *= conv.stride[0]
    return field, stride


def _chunks(total: int, size: int):
    for start in range(0, total, size):
        yield start, min(start + size, total)


def conv_features(extractor: torch.nn.Module, wave: torch.Tensor, chunk_frames: int) -> torch.Tensor:
    """The wav2vec2 CNN over (1, N) samples -> (1, C, T), computed ``chunk_frames`` outputs at a time.

    Every conv is unpadded and local, so output frames ``[a, b)`` need exactly samples
    ``[a*stride, (b-1)*stride + field)``. The one global operation, the base model's GroupNorm
    after the first conv (one group per channel: statistics over the whole clip), is computed in a
    first pass over that conv's output (float64 sums) and applied per chunk. Peak memory is then
    one chunk's activations instead of the whole clip's (about 4 GB for 10 minutes at 512 channels).
    """
    layers = list(extractor.conv_layers)
    field, stride = _receptive_field([layer.conv for layer in layers])
    total = (wave.shape[-1] - field) // stride + 1
    norm = getattr(layers[0], "layer_norm", None)
    global_norm = isinstance(norm, torch.nn.GroupNorm)
    if total <= chunk_frames or (global_norm and norm.num_groups != norm.num_channels):
        return extractor(wave)
    first_chunk = chunk_frames * stride // layers[0].conv.stride[0]  # same span, in first-conv outputs
    stats = _first_conv_stats(layers[0].conv, wave, first_chunk, norm.eps) if global_norm else None
    outputs = []
    for a, b in _chunks(total, chunk_frames):
        h = wave[:, None, a * stride : (b - 1) * stride + field]
        if global_norm:
            mean, inv_std = stats
            h = layers[0].conv(h)
            h = ((h - mean) * inv_std).to(h.dtype) * norm.weight[:, None] + norm.bias[:, None]
            h = layers[0].activation(h)
        else:
            h = layers[0](h)
        for layer in layers[1:]:
            h = layer(h)
        outputs.append(h)
    return torch.cat(outputs, dim=-1)


def _first_conv_stats(conv: torch.nn.Conv1d, wave: torch.Tensor, chunk: int, eps: float):
    """Per-channel mean and 1/std (biased variance + eps, as GroupNorm) of ``conv(wave)`` over the whole clip."""
    k, s = conv.kernel_size[0], conv.stride[0]
    total = (wave.shape[-1] - k) // s + 1
    acc = torch.zeros(2, conv.out_channels, dtype=torch.float64, device=wave.device)
    for a, b in _chunks(total, chunk):
        y = conv(wave[:, None, a * s : (b - 1) * s + k])[0].double()  # (C, b - a)
        acc[0] += y.sum(-1)
        acc[1] += y.pow(2).sum(-1)
    mean = acc[0] / total
    var = (acc[1] / total - mean.pow(2)).clamp_min(0)
    return mean[:, None].float(), torch.rsqrt(var + eps)[:, None].float()


# --------------------------------------------------------------------------------------------
# encoder
# --------------------------------------------------------------------------------------------
class AudioEncoder(FrozenEncoder):
    """wav2vec2 at 25 Hz. ``encode(wave_16k)`` -> ``(L, num_layers, hidden)`` float32 (CPU)."""

    def _probe(self) -> torch.Tensor:
        return self.model.feature_projection.projection.weight

    # CNN output frames (50 Hz) per chunk (30 s): caps the CNN's memory (~0.5 GB) for audio of any length.
    chunk_frames = 1500
    # 25 Hz frames per feed-forward call (2 minutes): the feed-forward is position-wise, so running it a
    # slice at a time is the same computation, and its 4x-wide activations (two of 1.1 GB per hour of
    # audio at 768 x 3072) are never built for the whole clip.
    ffn_chunk_frames = 3000

    def __init__(self, model: torch.nn.Module, do_normalize: bool):
        self.model = model
        cfg = model.config
        self.stable_layer_norm = bool(cfg.do_stable_layer_norm)
        self.config = AudioEncoderConfig(
            sample_rate=SAMPLE_RATE,
            video_fps=VIDEO_FPS,
            num_layers=cfg.num_hidden_layers,
            hidden_size=cfg.hidden_size,
            do_normalize=do_normalize,
        )

    def feature_shape(self, num_samples: int) -> tuple[int, int, int]:
        """``(L, num_layers, hidden)`` of :meth:`encode` for ``num_samples`` at 16 kHz (to preallocate)."""
        return num_video_frames(num_samples), self.config.num_layers, self.config.hidden_size

    @torch.no_grad()
    def encode(self, wave_16k: np.ndarray, out: torch.Tensor | None = None) -> torch.Tensor:
        """16 kHz mono -> ``(L, num_layers, hidden)`` float32 (CPU), written into ``out`` when given
        (e.g. one speaker's slice of a run's buffer, see :meth:`encode_features`)."""
        wave = np.asarray(wave_16k, dtype=np.float32)
        if wave.ndim != 1:
            raise InputError(
                f"audio must be a mono 1-D 16 kHz waveform, got shape {wave.shape}: mix it to mono first"
            )
        frames = num_video_frames(len(wave))
        if frames < 1 or len(wave) < MIN_SAMPLES:
            raise InputError(
                f"audio is {len(wave)} samples long (< 1 video frame at 16 kHz / 25 fps): use longer audio"
            )
        if self.config.do_normalize:
            wave = normalize_wave(wave)
        x = torch.from_numpy(np.ascontiguousarray(wave))[None].to(self.device, self.dtype)  # (1, N)
        features = conv_features(self.model.feature_extractor, x, self.chunk_frames).transpose(
            1, 2
        )  # (1, T, C)
        features = linear_interpolation(features.float(), frames).to(self.dtype)  # (1, L, C_conv)
        return self.encode_features(features, out)

    @torch.no_grad()
    def encode_features(self, features: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """CNN features ``(1, L, C_conv)`` -> ``(L, num_layers, hidden)`` float32 (CPU).

        Each layer's output is copied into ``out`` (allocated when None) as soon as it is computed: no list
        of per-layer tensors, no concatenated copy. ``out`` may be file-backed (:mod:`infinitetalk.spill`).
        """
        shape = (features.shape[1], self.config.num_layers, self.config.hidden_size)
        if out is None:
            out = torch.empty(shape, dtype=torch.float32)
        elif tuple(out.shape) != shape or out.dtype != torch.float32 or out.device.type != "cpu":
            raise ValueError(
                f"out is {out.dtype} {tuple(out.shape)} on {out.device}: expected float32 {shape} on cpu"
            )
        hidden = self.model.feature_projection(features)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden  # (1, L, C)
        encoder = self.model.encoder
        hidden = hidden + encoder.pos_conv_embed(hidden)
        if not self.stable_layer_norm:
            hidden = encoder.layer_norm(hidden)
        last = len(encoder.layers) - 1
        for i, layer in enumerate(encoder.layers):
            with _sliced_feed_forward(layer.feed_forward, self.ffn_chunk_frames):
                result = layer(hidden, attention_mask=None)
            hidden = result[0] if isinstance(result, tuple) else result  # transformers 4 returns a tuple
            kept = encoder.layer_norm(hidden) if self.stable_layer_norm and i == last else hidden
            out[:, i] = kept[0]  # (L, C), cast to float32 and moved to the CPU by the copy
        return out  # (L, layers, C)


@contextlib.contextmanager
def _sliced_feed_forward(feed_forward: torch.nn.Module, frames: int):
    """Within the block, ``feed_forward`` maps ``(1, L, C)`` ``frames`` rows at a time into one output."""
    whole = feed_forward.forward

    def sliced(hidden: torch.Tensor) -> torch.Tensor:
        length = hidden.shape[1]
        if length <= frames:
            return whole(hidden)
        out = torch.empty_like(hidden)
        for a in range(0, length, frames):
            out[:, a : a + frames] = whole(hidden[:, a : a + frames])
        return out

    feed_forward.forward = sliced  # an instance attribute: the module's own forward stays untouched
    try:
        yield
    finally:
        del feed_forward.forward


def load_audio_encoder(
    path: str | Path,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    do_normalize: bool | None = None,
) -> AudioEncoder:
    """Load wav2vec2 from a Hugging Face folder or a single file (see module docstring)."""
    path = Path(path)
    weights, config = _weights_and_config(path)
    source = open_checkpoint(weights, prefixes=())
    return audio_encoder_from_reader(
        source, config, device=device, dtype=dtype, do_normalize=do_normalize, preprocessor_dir=weights.parent
    )


def audio_encoder_from_reader(
    source: CheckpointReader,
    config=None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    do_normalize: bool | None = None,
    preprocessor_dir: Path | None = None,
) -> AudioEncoder:
    """Build the encoder from an open checkpoint (a file, or tensors another host already loaded).

    ``config`` (a ``Wav2Vec2Config``) is inferred from shapes when None. ``do_normalize`` None: the
    ``preprocessor_config.json`` in ``preprocessor_dir`` decides, else the conv norm type (see module
    docstring).
    """
    from transformers import Wav2Vec2Model

    keys = model_keys(list(source.keys()))
    if not keys:
        raise CheckpointError(
            f"checkpoint {source.path} is not a wav2vec2 model (no feature_projection / encoder layers): pick "
            "the chinese-wav2vec2-base folder or wav2vec2-chinese-base_fp16.safetensors"
        )
    config = config or infer_wav2vec2_config(keys, source)
    with torch.device("meta"):
        expected = set(Wav2Vec2Model(config).state_dict())
    state = _state(keys, source, expected)
    model = build_module(
        lambda: Wav2Vec2Model(config),
        state,
        source=source.path,
        device=device,
        dtype=dtype,
        ignore_missing=("masked_spec_embed",),
    )
    check_materialized(model, source.path)
    if do_normalize is None:
        default = bool(config.do_stable_layer_norm)
        do_normalize = _do_normalize(preprocessor_dir, default) if preprocessor_dir is not None else default
    logger.info(
        "wav2vec2 %s: hidden %d, %d layers, %d heads, normalize=%s",
        source.path.name,
        config.hidden_size,
        config.num_hidden_layers,
        config.num_attention_heads,
        do_normalize,
    )
    return AudioEncoder(model, do_normalize)


def features_from_50hz(hidden_states, num_samples: int) -> torch.Tensor:
    """Per-frame features from wav2vec2 hidden states computed at the CNN rate (about 50 Hz).

    ``hidden_states``: the encoder input plus every layer output, each ``(T50, C)`` or ``(1, T50, C)``
    (what ComfyUI's own audio encoder returns as ``encoded_audio_all_layers``); ``num_samples``: the
    16 kHz length they were computed from. Returns ``(L, layers, C)`` float32 with the reference's frame
    count ``L = int(num_samples / 16000 * 25)``: the layer outputs (the input is dropped, like the
    reference's ``hidden_states[1:]``) linearly interpolated in time to ``L`` frames (``align_corners``).

    This is *not* the reference's computation: the reference interpolates the CNN features to 25 Hz and
    runs the transformer at 25 Hz (:meth:`AudioEncoder.encode`); here the transformer ran at 50 Hz and
    only its outputs are interpolated, as ComfyUI's ``WanInfiniteTalkToVideo`` does. The two differ;
    encode the waveform with :class:`AudioEncoder` when the reference's features are wanted.
    """
    layers = [torch.as_tensor(h) for h in hidden_states]
    if len(layers) < 2:
        raise InputError(
            f"audio encoder output holds {len(layers)} hidden state(s): expected the input plus every layer "
            "(ComfyUI's encoded_audio_all_layers)"
        )
    layers = [h[0] if h.ndim == 3 else h for h in layers[1:]]  # (T50, C) each, first item of a batch
    if any(h.ndim != 2 or h.shape != layers[0].shape for h in layers):
        raise InputError(
            f"audio encoder hidden states have shapes {[tuple(h.shape) for h in layers[:3]]}...: expected one "
            "(frames, channels) tensor per layer"
        )
    frames = num_video_frames(int(num_samples))
    if frames < 1:
        raise InputError(
            f"audio is {num_samples} samples long (< 1 video frame at 16 kHz / 25 fps): use longer audio"
        )
    stacked = torch.stack(layers, dim=1).float()  # (T50, layers, C)
    t50, n_layers, channels = stacked.shape
    flat = stacked.reshape(1, t50, n_layers * channels)
    return linear_interpolation(flat, frames)[0].reshape(frames, n_layers, channels)


def _weights_and_config(path: Path):
    """(weights file, Wav2Vec2Config or None) for a folder or a single file."""
    if not path.is_dir():
        return path, None
    weights = next((path / n for n in _WEIGHT_FILES if (path / n).is_file()), None)
    if weights is None:
        raise CheckpointError(
            f"wav2vec2 folder {path} has no {' / '.join(_WEIGHT_FILES)}: download chinese-wav2vec2-base "
            "(TencentGameMate, model.safetensors from revision refs/pr/1) into it"
        )
    if not (path / "config.json").is_file():
        return weights, None
    from transformers import Wav2Vec2Config

    config = Wav2Vec2Config.from_dict(json.loads((path / "config.json").read_text()))
    config.apply_spec_augment, config.mask_time_prob = False, 0.0
    return weights, config


def _do_normalize(folder: Path, default: bool) -> bool:
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        return bool(json.loads(pre.read_text()).get("do_normalize", default))
    return default
