"""Media I/O: audio loading and speech preparation, the soundtrack, video reading/writing, muxing, output
formats, live previews, captions.

PyAV, soundfile, scipy, pyloudnorm and PIL only: no torchaudio and no ffmpeg binary.
"""

from .audio import (
    SPEECH_SR,
    Soundtrack,
    as_soundtrack,
    audio_num_frames,
    combine_soundtracks,
    combine_speakers,
    downmix,
    fit_length,
    limit_true_peak,
    load_audio,
    loudness_normalize,
    measure_loudness,
    normalize_delivery,
    prepare_speech,
    resample,
    to_mono,
    true_peak,
)
from .captions import Cue, active_cue, burn_captions, srt_format, srt_parse
from .export import FORMATS, output_path, write_png_sequence, write_video
from .live import LivePlaylist, write_clip
from .mux import mux
from .video import CODECS, Mp4Writer, VideoReader, VideoWriter, frame_to_rgb, read_image

__all__ = [
    "CODECS",
    "FORMATS",
    "SPEECH_SR",
    "Cue",
    "LivePlaylist",
    "Mp4Writer",
    "Soundtrack",
    "VideoReader",
    "VideoWriter",
    "active_cue",
    "as_soundtrack",
    "audio_num_frames",
    "burn_captions",
    "combine_soundtracks",
    "combine_speakers",
    "downmix",
    "fit_length",
    "frame_to_rgb",
    "limit_true_peak",
    "load_audio",
    "loudness_normalize",
    "measure_loudness",
    "mux",
    "normalize_delivery",
    "output_path",
    "prepare_speech",
    "read_image",
    "resample",
    "srt_format",
    "srt_parse",
    "to_mono",
    "true_peak",
    "write_clip",
    "write_png_sequence",
    "write_video",
]
