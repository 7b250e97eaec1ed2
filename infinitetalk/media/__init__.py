"""Media I/O: audio loading and speech preparation, video reading/writing, muxing, captions.

PyAV, soundfile, scipy, pyloudnorm and PIL only: no torchaudio and no ffmpeg binary.
"""

from .audio import (
    SPEECH_SR,
    audio_num_frames,
    combine_speakers,
    load_audio,
    loudness_normalize,
    measure_loudness,
    prepare_speech,
    resample,
    to_mono,
)
from .captions import Cue, active_cue, burn_captions, srt_format, srt_parse
from .mux import mux
from .video import Mp4Writer, VideoReader, read_image

__all__ = [
    "SPEECH_SR",
    "Cue",
    "Mp4Writer",
    "VideoReader",
    "active_cue",
    "audio_num_frames",
    "burn_captions",
    "combine_speakers",
    "load_audio",
    "loudness_normalize",
    "measure_loudness",
    "mux",
    "prepare_speech",
    "read_image",
    "resample",
    "srt_format",
    "srt_parse",
    "to_mono",
]
