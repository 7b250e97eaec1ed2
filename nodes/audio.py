"""Audio nodes: load audio (PyAV/soundfile, no torchaudio) and the wav2vec2 audio embedding."""

from __future__ import annotations

import os

import folder_paths
import numpy as np
import torch

from ..infinitetalk.validation import AUDIO_SECONDS
from . import _common as c
from . import _core, _models
from ._api import io
from ._widgets import advanced


def audio_to_numpy(audio: dict, name: str = "audio") -> tuple[np.ndarray, int]:
    """Core AUDIO ``{"waveform": (B, C, N), "sample_rate"}`` -> first item as float32 ``(C, N)``, checked
    (rate, channels, length, finite samples)."""
    from ..infinitetalk.validation import check_audio

    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise ValueError(
            f"{name} input must be a ComfyUI AUDIO ({{'waveform': (B, C, N), 'sample_rate': int}})"
        )
    wave = audio["waveform"]
    if not isinstance(wave, torch.Tensor) or wave.ndim != 3 or wave.shape[0] < 1 or wave.shape[-1] == 0:
        raise ValueError(
            f"{name} waveform has shape {tuple(getattr(wave, 'shape', ()))}; expected (batch, channels, samples) "
            "with samples > 0"
        )
    sr = audio["sample_rate"]
    return check_audio(wave[0].detach().float().cpu().numpy(), sr, name=name), int(sr)


def numpy_to_audio(wave: np.ndarray, sample_rate: int) -> dict:
    """float32 ``(N,)`` or ``(C, N)`` -> core AUDIO with batch 1."""
    tensor = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    if tensor.ndim == 1:
        tensor = tensor[None]  # (1, N)
    return {"waveform": tensor[None], "sample_rate": int(sample_rate)}  # (1, C, N)


def _input_audio_files() -> list[str]:
    input_dir = folder_paths.get_input_directory()
    files = [f for f in os.listdir(input_dir) if os.path.isfile(os.path.join(input_dir, f))]
    return sorted(folder_paths.filter_files_content_types(files, ["audio", "video"]))


class LoadAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfiniteTalkLoadAudio",
            display_name="InfiniteTalk Load Audio",
            category=c.CATEGORY_AUDIO,
            description="Loads an audio file (wav, flac, mp3, m4a, ogg, ...) or the sound track of a video from "
            "ComfyUI's input folder, without torchaudio. Output is ComfyUI's standard AUDIO.",
            inputs=[
                io.Combo.Input(
                    "audio",
                    options=_input_audio_files(),
                    upload=io.UploadType.audio,
                    tooltip="File in ComfyUI's input folder; use the upload button to add one.",
                ),
                advanced(
                    io.Float.Input(
                        "start_seconds",
                        default=0.0,
                        min=float(AUDIO_SECONDS.lo),  # the library's bounds: they hold through the API
                        max=float(AUDIO_SECONDS.hi),
                        step=0.1,
                        tooltip="Skip this many seconds at the start.",
                    )
                ),
                advanced(
                    io.Float.Input(
                        "duration_seconds",
                        default=0.0,
                        min=float(AUDIO_SECONDS.lo),  # the library's bounds: they hold through the API
                        max=float(AUDIO_SECONDS.hi),
                        step=0.1,
                        tooltip="Keep at most this many seconds (0 = to the end).",
                    )
                ),
            ],
            outputs=[
                io.Audio.Output(
                    display_name="audio", tooltip="Waveform (1, channels, samples) and sample rate."
                )
            ],
        )

    @classmethod
    def execute(cls, audio, start_seconds=0.0, duration_seconds=0.0) -> io.NodeOutput:
        from ..infinitetalk.media.stream import read_audio
        from ._runs import spill_dir

        # decoded block by block: the skipped start is never stored, long files are not held twice and
        # live in a file-backed buffer once large (infinitetalk.spill)
        path = c.media_file(audio, "audio")  # the path boundary: inside the input folder or refused
        wave, sr = read_audio(path, start_seconds, duration_seconds, name="audio", spill_dir=spill_dir())
        if wave.shape[-1] == 0:
            raise ValueError(f"audio '{audio}': nothing left after start_seconds={start_seconds}; lower it")
        return io.NodeOutput(numpy_to_audio(wave, sr))

    @classmethod
    def fingerprint_inputs(cls, audio, start_seconds=0.0, duration_seconds=0.0):
        from ..infinitetalk.errors import InputError

        try:
            path = c.media_file(audio, "audio", must_exist=False)
        except InputError:
            return (None, start_seconds, duration_seconds)  # refused by validate_inputs / execute
        return (os.path.getmtime(path) if path.exists() else None, start_seconds, duration_seconds)

    @classmethod
    def validate_inputs(cls, audio, start_seconds=0.0, duration_seconds=0.0):
        # the path boundary (infinitetalk.paths) answers before anything is looked up: a name outside the
        # input folder is refused, never tested for existence
        from ..infinitetalk.errors import InputError

        try:
            c.media_file(audio, "audio")
        except InputError as err:
            return str(err)
        return True


class AudioEmbed(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfiniteTalkAudioEmbed",
            display_name="InfiniteTalk Audio Embed",
            category=c.CATEGORY_AUDIO,
            description="Turns speech into the wav2vec2 features that drive the lips: mono, 16 kHz, optional "
            "loudness normalisation to -23 LUFS, one feature row per 25 fps video frame. With a second "
            "audio the video shows two speakers (use the multi adapter).",
            inputs=[
                io.MultiType.Input(
                    "audio_encoder",
                    types=[io.Custom("INFINITETALK_AUDIO_ENCODER"), io.Custom(_core.AUDIO_ENCODER)],
                    tooltip="From InfiniteTalk Audio Encoder Loader, or ComfyUI's Load Audio Encoder (its "
                    "wav2vec2 weights are run the reference's way: 25 Hz, same features).",
                ),
                io.Audio.Input(
                    "audio_1", tooltip="Speech of speaker 1 (the only speaker for single-person video)."
                ),
                io.Audio.Input(
                    "audio_2",
                    optional=True,
                    tooltip="Speech of speaker 2 (two-person video; needs the multi adapter).",
                ),
                io.Boolean.Input(
                    "normalize_loudness",
                    default=True,
                    tooltip="Normalise each track to -23 LUFS like the reference (off for TTS audio "
                    "that is already level, or to keep relative loudness).",
                ),
                io.Combo.Input(
                    "mode",
                    options=["para", "add"],
                    default="para",
                    tooltip="Two speakers only. para: both tracks play together (dialogue tracks "
                    "from TTS are already aligned). add: speaker 1 talks first, then speaker 2.",
                ),
                advanced(
                    io.Float.Input(
                        "silence_noise_floor",
                        default=0.0,
                        min=-90.0,
                        max=0.0,
                        step=1.0,
                        tooltip="Drift: white noise at this level (dBFS, about -45) in the silences of the "
                        "speech before wav2vec2, against mouths moving in silence; the soundtrack is untouched. "
                        "0 = off.",
                    )
                ),
            ],
            outputs=[
                io.Custom("INFINITETALK_AUDIO_EMBEDS").Output(
                    display_name="audio_embeds", tooltip="Per-speaker features for the sampler."
                ),
                io.Audio.Output(
                    display_name="audio",
                    tooltip="The soundtrack of the video: audio_1 passed through untouched (its own rate, "
                    "channels and level); with two speakers both tracks mixed (para) or one after the "
                    "other as the frames are timed (add). The 16 kHz speech signal stays inside the "
                    "embedding. The sampler's frames carry it to Video Combine already.",
                ),
            ],
        )

    @classmethod
    def execute(
        cls, audio_encoder, audio_1, normalize_loudness, mode, audio_2=None, silence_noise_floor=0.0
    ) -> io.NodeOutput:
        from ..infinitetalk.audio_embedding import prepare_audio
        from ..infinitetalk.validation import check_not_silent
        from ._bridge import ComfyModelManager
        from ._runs import spill_dir

        named = [("audio_1", audio_1)] + ([("audio_2", audio_2)] if audio_2 is not None else [])
        speakers = [audio_to_numpy(a, name) for name, a in named]
        check_not_silent([w for w, _ in speakers], [name for name, _ in named])
        if not isinstance(audio_encoder, _models.Managed):  # core's AUDIO_ENCODER
            audio_encoder = _core.audio_encoder(audio_encoder)
        with torch.inference_mode():
            embeds = prepare_audio(
                audio_encoder.obj,
                speakers,
                audio_type=mode,
                normalize=normalize_loudness,
                spill_dir=spill_dir(),
                model_manager=ComfyModelManager({"audio_encoder": audio_encoder}),
                noise_floor_db=silence_noise_floor or None,
            )
        if audio_2 is None:  # the original AUDIO, not a copy
            return io.NodeOutput(embeds, audio_1)
        return io.NodeOutput(embeds, numpy_to_audio(embeds.soundtrack, embeds.soundtrack_rate))


NODES = [LoadAudio, AudioEmbed]
