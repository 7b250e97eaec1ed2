"""Video Combine: frames (stream or IMAGE) + audio -> H.264/AAC mp4 in the output folder, with captions."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import folder_paths
import numpy as np
import torch
from comfy_api.latest import InputImpl, io, ui

from . import _common as c
from ._widgets import advanced
from .audio import audio_to_numpy

log = logging.getLogger(__name__)

CAPTIONS = ["none", "burn-in", "subtitle track"]
CHUNK = 25  # frames encoded at a time when re-encoding (one second)


class VideoCombine(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfiniteTalkVideoCombine",
            display_name="InfiniteTalk Video Combine",
            category=c.CATEGORY_VIDEO,
            description="Writes an H.264 + AAC mp4 to ComfyUI's output folder and previews it. Frames from the "
            "sampler are remuxed without re-encoding (unless captions are burnt in); an IMAGE batch is encoded. "
            "Captions from an SRT text: burnt into the picture or as a subtitle track.",
            inputs=[
                io.Custom("INFINITETALK_FRAMES").Input(
                    "frames",
                    optional=True,
                    tooltip="Frames from InfiniteTalk Sampler (on disk; carries its soundtrack).",
                ),
                io.Image.Input(
                    "images",
                    optional=True,
                    tooltip="Or an IMAGE batch from any node (used when 'frames' is not connected).",
                ),
                io.Audio.Input(
                    "audio",
                    optional=True,
                    tooltip="Soundtrack. Default: the audio the sampler's frames are timed to. Cut or "
                    "padded with silence to the video length.",
                ),
                io.String.Input(
                    "srt",
                    optional=True,
                    multiline=True,
                    force_input=True,
                    tooltip="Captions as SRT text (e.g. the srt output of the TTS nodes).",
                ),
                io.Combo.Input(
                    "captions",
                    options=CAPTIONS,
                    default="none",
                    tooltip="none: ignore the SRT. burn-in: draw the captions into the picture (re-encodes). "
                    "subtitle track: add a switchable mov_text subtitle stream.",
                ),
                io.String.Input(
                    "filename_prefix",
                    default="InfiniteTalk/video",
                    tooltip="Output file prefix inside ComfyUI's output folder (sub-folders allowed).",
                ),
                advanced(
                    io.Float.Input(
                        "fps",
                        default=25.0,
                        min=1.0,
                        max=120.0,
                        step=1.0,
                        tooltip="Frame rate for an IMAGE batch (sampler frames are always 25 fps).",
                    )
                ),
                advanced(
                    io.Int.Input(
                        "crf",
                        default=19,
                        min=0,
                        max=51,
                        step=1,
                        tooltip="H.264 quality when encoding (0 lossless, 18-23 typical, 51 worst).",
                    )
                ),
            ],
            outputs=[io.Video.Output(display_name="video", tooltip="The written mp4 as a ComfyUI VIDEO.")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, filename_prefix=None):
        from ..infinitetalk.errors import InputError
        from ..infinitetalk.validation import safe_output_path

        if isinstance(filename_prefix, str):
            try:
                safe_output_path(filename_prefix, folder_paths.get_output_directory())
            except InputError as err:
                return str(err)
        return True

    @classmethod
    def execute(
        cls, captions, filename_prefix, frames=None, images=None, audio=None, srt=None, fps=25.0, crf=19
    ) -> io.NodeOutput:
        from ..infinitetalk.media import srt_parse
        from ..infinitetalk.validation import safe_output_path

        safe_output_path(filename_prefix, folder_paths.get_output_directory())  # also when linked

        if frames is None and images is None:
            raise ValueError(
                "InfiniteTalk Video Combine needs 'frames' (from the sampler) or 'images': connect one"
            )
        cues = srt_parse(srt) if captions != "none" and srt and srt.strip() else []
        if captions != "none" and not cues:
            log.warning("captions '%s' asked but the srt input is empty: writing without captions", captions)
        sound = _soundtrack(audio, frames)
        width, height = (
            (frames.width, frames.height) if frames is not None else (images.shape[2], images.shape[1])
        )
        out_dir, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), width, height
        )
        file = f"{name}_{counter:05}_.mp4"
        out_path = Path(out_dir) / file
        subtitles = cues if captions == "subtitle track" and cues else None
        burn = cues if captions == "burn-in" else []
        if frames is not None and not burn:
            frames.store.finalize(out_path, audio=sound, subtitles=subtitles)
        else:
            rate = frames.fps if frames is not None else int(round(fps))
            chunks = _chunks_from_stream(frames) if frames is not None else _chunks_from_images(images)
            _encode(chunks, out_path, width, height, rate, crf, sound, subtitles, burn)
        log.info("wrote %s", out_path)
        result = ui.SavedResult(file, subfolder, io.FolderType.output)
        return io.NodeOutput(InputImpl.VideoFromFile(str(out_path)), ui=ui.PreviewVideo([result]))


def _soundtrack(audio, frames):
    if audio is not None:
        return audio_to_numpy(audio)  # ((C, N), sr)
    if frames is not None and frames.audio_16k is not None:
        return frames.audio_16k, 16000
    return None


def _chunks_from_stream(frames):
    batch = []
    for i, frame in enumerate(frames.iter_frames()):
        if i >= frames.num_frames:
            break
        batch.append(frame)
        if len(batch) == CHUNK:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


def _chunks_from_images(images: torch.Tensor):
    for start in range(0, images.shape[0], CHUNK):
        part = images[start : start + CHUNK, :, :, :3].float().clamp(0, 1)
        yield (part * 255).round().to(torch.uint8).cpu().numpy()


def _encode(chunks, out_path: Path, width, height, fps, crf, sound, subtitles, burn) -> None:
    """Encode uint8 chunks (burning captions if asked) to a temporary H.264 file, then mux with the audio."""
    from ..infinitetalk.media import Mp4Writer, burn_captions, mux

    with tempfile.TemporaryDirectory(dir=folder_paths.get_temp_directory()) as tmp:
        segment = Path(tmp) / "video.mp4"
        writer = Mp4Writer(segment, fps, width, height, crf)
        written = 0
        try:
            for chunk in chunks:  # (T, H, W, 3)
                if burn:
                    chunk = burn_captions(chunk, burn, written / fps, fps=fps)
                writer.write(chunk)
                written += chunk.shape[0]
        finally:
            writer.close()
        mux([segment], out_path, audio=sound, subtitles=subtitles, fps=fps)
    if not os.path.exists(out_path):
        raise RuntimeError(f"could not write {out_path}")


NODES = [VideoCombine]
