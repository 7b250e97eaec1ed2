"""Video Combine: frames (stream or IMAGE) + the soundtrack -> a video file in the output folder.

Formats (``infinitetalk.media.export``): H.264 + AAC mp4 (default; the sampler's segments are remuxed, not
re-encoded), ProRes 422 HQ + PCM mov, FFV1 lossless + PCM mkv, PNG sequence + WAV folder, and with alpha:
ProRes 4444, WebM VP9 (+ Opus), FFV1 RGBA, PNG RGBA. The soundtrack is the user's own audio at its own rate
and channels; its loudness only changes with a delivery target.

Alpha and compositing (``infinitetalk.composite``): frames from InfiniteTalk Key are keyed as they are
written; with a ``background`` (a slide IMAGE or a VIDEO) the presenter is put over it at ``x``, ``y``,
``scale`` and the result is opaque. An IMAGE batch takes its alpha from ``mask``. Alpha previews are a WebM
with alpha shown over a checkerboard (web/js/alpha_preview.js).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

import folder_paths
import numpy as np
import torch

from . import _common as c
from ._api import InputImpl, io, ui
from ._bridge import image_to_uint8
from ._widgets import advanced, choice, dynamic_combo
from .audio import audio_to_numpy

log = logging.getLogger(__name__)

CAPTIONS = ["none", "burn-in", "subtitle track"]
FORMATS = [
    "h264-mp4",
    "prores-mov",
    "ffv1-mkv",
    "png-wav",
    "prores4444-mov",
    "webm-vp9",
    "ffv1-rgba-mkv",
    "png-rgba",
]
ALPHA_FORMATS = ("prores4444-mov", "webm-vp9", "ffv1-rgba-mkv", "png-rgba")
ALPHA_PREVIEW = (
    "infinitetalk_alpha"  # in preview file names: web/js/alpha_preview.js draws a checkerboard behind
)
PRESETS = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"]
LOUDNESS = {
    "original": None,
    "-14 LUFS": -14.0,
    "-16 LUFS": -16.0,
    "-23 LUFS": -23.0,
    "-24 LUFS": -24.0,
}
CHUNK = c.FPS  # frames encoded at a time when re-encoding (one second)
PROXY_CRF = 23  # browser preview of formats a browser cannot play


def _srt_input() -> io.String.Input:
    return io.String.Input(
        "srt",
        optional=True,
        multiline=True,
        force_input=True,
        tooltip="Captions as SRT text (e.g. the srt output of the TTS nodes).",
    )


def _source_inputs() -> list:
    """What is written: the sampler's frames or an IMAGE batch, the soundtrack, captions."""
    return [
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
            tooltip="Soundtrack. Default: the one the sampler's frames carry (the audio given to "
            "Audio Embed, at its own rate and channels). Cut or padded with silence to the video length.",
        ),
        *dynamic_combo(
            io.Combo.Input(
                "captions",
                options=CAPTIONS,
                default="none",
                tooltip="none: no captions. burn-in: draw the captions of the SRT into the picture "
                "(re-encodes). subtitle track: add a switchable mov_text subtitle stream.",
            ),
            {"burn-in": [_srt_input()], "subtitle track": [_srt_input()]},
            flat_before=True,  # where the srt socket always was
        ),
    ]


def _file_inputs() -> list:
    """Where and how: the file name, the format, the loudness."""
    return [
        io.String.Input(
            "filename_prefix",
            default="InfiniteTalk/video",
            tooltip="Output file prefix inside ComfyUI's output folder (sub-folders allowed).",
        ),
        io.Combo.Input(
            "format",
            options=FORMATS,
            default="h264-mp4",
            tooltip="h264-mp4: H.264 (BT.709) + AAC, plays everywhere. prores-mov: ProRes 422 HQ "
            "10-bit + 24-bit PCM, for editing. ffv1-mkv: lossless RGB + 24-bit PCM, for archiving. "
            "png-wav: a folder of PNG frames + soundtrack.wav (+ captions.srt), for compositing. "
            "With alpha (frames from InfiniteTalk Key, or images + mask; straight, not premultiplied): "
            "prores4444-mov (editing), webm-vp9 (browsers, + Opus), ffv1-rgba-mkv (lossless), png-rgba. "
            "The preview is an H.264 copy when the browser cannot play the format. For masters made "
            "from the exact generated frames set storage h264-lossless on InfiniteTalk Sampler Options.",
        ),
        io.Combo.Input(
            "loudness",
            options=list(LOUDNESS),
            default="original",
            tooltip="original: the audio's own level, untouched. Or a delivery target (integrated, "
            "with a true-peak limiter): -14 LUFS music streaming, -16 podcasts and web video, "
            "-23 EBU R128 broadcast, -24 ATSC A/85.",
        ),
    ]


def _encoding_inputs() -> list:
    """Expert encoding knobs (advanced)."""
    return [
        advanced(
            io.Float.Input(
                "fps",
                default=float(c.FPS),
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
                tooltip="H.264 quality when encoding (0 lossless, 18-23 typical, 51 worst). The "
                "sampler's frames stored as H.264 (at 18) are remuxed as they are unless captions are "
                "burnt in; frames stored lossless are encoded at this crf.",
            )
        ),
        advanced(
            io.Combo.Input(
                "preset",
                options=PRESETS,
                default="medium",
                tooltip="x264 speed/size trade-off when encoding H.264 (slower = smaller file, "
                "same quality).",
            )
        ),
        advanced(
            io.Float.Input(
                "true_peak",
                default=-1.0,
                min=-9.0,
                max=0.0,
                step=0.1,
                tooltip="True-peak ceiling (dBTP) applied with a loudness target (-1 for EBU R128 "
                "and most platforms, -2 for some streaming services).",
            )
        ),
    ]


def _composite_inputs() -> list:
    """The presenter over a background (slide or video), the alpha of an IMAGE batch, the matte."""
    return [
        io.Image.Input(
            "background",
            optional=True,
            tooltip="A background for the presenter (a slide): the keyed frames go over it at x, y, "
            "scale and the video is opaque, in any format, at the background's size.",
        ),
        io.Video.Input(
            "background_video",
            optional=True,
            tooltip="Or a background video (looped when shorter than the talk).",
        ),
        io.Mask.Input(
            "mask",
            optional=True,
            tooltip="Alpha for an 'images' batch (1 = opaque), e.g. from a background-removal node.",
        ),
        io.Float.Input(
            "x",
            optional=True,  # older saved prompts do not have it
            default=1.0,
            min=0.0,
            max=1.0,
            step=0.01,
            tooltip="Presenter position across the background: 0 left edge, 0.5 centre, 1 right edge.",
        ),
        io.Float.Input(
            "y",
            optional=True,  # older saved prompts do not have it
            default=1.0,
            min=0.0,
            max=1.0,
            step=0.01,
            tooltip="Presenter position down the background: 0 top, 1 standing on the bottom edge.",
        ),
        io.Float.Input(
            "scale",
            optional=True,  # older saved prompts do not have it
            default=0.8,
            min=0.05,
            max=2.0,
            step=0.01,
            tooltip="Presenter height as a fraction of the background's height.",
        ),
        advanced(
            io.Boolean.Input(
                "matte",
                optional=True,  # older saved prompts do not have it
                default=False,
                tooltip="Alpha formats: also write the alpha alone as a grey video (NAME_matte) for "
                "editors that want a separate matte.",
            )
        ),
    ]


class VideoCombine(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfiniteTalkVideoCombine",
            display_name="InfiniteTalk Video Combine",
            category=c.CATEGORY_VIDEO,
            description="Writes the video to ComfyUI's output folder and previews it: H.264 + AAC mp4 (frames "
            "from the sampler are remuxed without re-encoding unless captions are burnt in), ProRes 422 HQ mov, "
            "FFV1 lossless mkv, or a PNG sequence + WAV. The sound is the user's own audio (own sample rate "
            "and channels), at its own loudness or a delivery target. Captions from an SRT text: burnt into "
            "the picture or as a subtitle track.",
            inputs=[*_source_inputs(), *_file_inputs(), *_encoding_inputs(), *_composite_inputs()],
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
        cls,
        captions,
        filename_prefix,
        frames=None,
        images=None,
        audio=None,
        srt=None,
        format="h264-mp4",
        loudness="original",
        fps=float(c.FPS),
        crf=19,
        preset="medium",
        true_peak=-1.0,
        background=None,
        background_video=None,
        mask=None,
        x=1.0,
        y=1.0,
        scale=0.8,
        matte=False,
    ) -> io.NodeOutput:
        from ..infinitetalk.media import normalize_delivery, srt_parse
        from ..infinitetalk.media.export import output_format
        from ..infinitetalk.validation import safe_output_path

        safe_output_path(filename_prefix, folder_paths.get_output_directory())  # also when linked

        if frames is None and images is None:
            raise ValueError(
                "InfiniteTalk Video Combine needs 'frames' (from the sampler) or 'images': connect one"
            )
        captions, revealed = choice(captions, "captions", {"srt": srt})  # DynamicCombo or flat
        srt = revealed.get("srt")
        if loudness not in LOUDNESS:
            raise ValueError(f"loudness '{loudness}' is unknown: use one of {', '.join(LOUDNESS)}")
        spec = output_format(format)
        cues = srt_parse(srt) if captions != "none" and srt and srt.strip() else []
        if captions != "none" and not cues:
            log.warning("captions '%s' asked but the srt input is empty: writing without captions", captions)
        sound = _soundtrack(audio, frames)
        if sound is not None and LOUDNESS[loudness] is not None:
            sound = normalize_delivery(sound, LOUDNESS[loudness], true_peak)
        width, height = (
            (frames.width, frames.height) if frames is not None else (images.shape[2], images.shape[1])
        )
        with contextlib.ExitStack() as cleanup:
            presenter = _presenter(frames, images, mask, background, background_video, x, y, scale, cleanup)
            if presenter is not None:
                width, height = presenter.output_size(width, height)
            _check_alpha(format, presenter, frames, images, mask, matte)
            out_dir, name, counter, subfolder, _ = folder_paths.get_save_image_path(
                filename_prefix, folder_paths.get_output_directory(), width, height
            )
            file = f"{name}_{counter:05}_{spec.suffix}"
            out_path = Path(out_dir) / file
            subtitles = cues if captions == "subtitle track" and cues else None
            burn = cues if captions == "burn-in" else None
            rate = frames.fps if frames is not None else int(round(fps))
            _write(
                out_path,
                frames,
                images,
                rate,
                format,
                crf,
                preset,
                sound,
                subtitles,
                burn,
                presenter,
                mask,
                matte,
            )
        log.info("wrote %s", out_path)
        if presenter is not None or spec.alpha:
            return _composited_result(out_path, spec, f"{name}_{counter:05}", subfolder, rate, sound)
        if format == "h264-mp4":
            result = ui.SavedResult(file, subfolder, io.FolderType.output)
            return io.NodeOutput(InputImpl.VideoFromFile(str(out_path)), ui=ui.PreviewVideo([result]))
        # browsers play none of the other formats: preview an H.264 copy (a remux for sampler frames)
        proxy, proxy_sub = _proxy(frames, images, f"{name}_{counter:05}_preview.mp4", rate, sound, burn)
        video = out_path if spec.codec is not None else proxy
        result = ui.SavedResult(proxy.name, proxy_sub, io.FolderType.temp)
        return io.NodeOutput(InputImpl.VideoFromFile(str(video)), ui=ui.PreviewVideo([result]))


def _presenter(frames, images, mask, background, background_video, x, y, scale, cleanup):
    """What happens to the frames on the way out: keyed (frames from InfiniteTalk Key), put over a background.
    None when neither is asked."""
    from ..infinitetalk.composite import Placement, Presenter, StillBackground, VideoBackground

    key = getattr(frames, "key", None) if frames is not None else None
    if background is not None and background_video is not None:
        raise ValueError(
            "InfiniteTalk Video Combine got both 'background' and 'background_video': connect only one"
        )
    bg = None
    if background is not None:
        bg = StillBackground(image_to_uint8(background[0]))
    elif background_video is not None:
        from ..infinitetalk.media import VideoReader
        from ._bridge import edited_video_file

        path, start, duration = edited_video_file(background_video, cleanup)
        reader = VideoReader(
            path, fps=frames.fps if frames is not None else 25, start=start, duration=duration
        )
        cleanup.callback(reader.close)
        bg = VideoBackground(reader)
    if key is None and bg is None:
        return None
    if frames is None and bg is not None and mask is None:
        log.warning("InfiniteTalk Video Combine: 'images' without a 'mask' cover the background (opaque)")
    return Presenter(
        key=key, hint=getattr(frames, "hint", None), background=bg, placement=Placement(x, y, scale)
    )


def _check_alpha(fmt, presenter, frames, images, mask, matte) -> None:
    """One clear line, before any frame is written, for combinations that cannot give what was asked."""
    alpha_out = fmt in ALPHA_FORMATS
    if presenter is not None and presenter.alpha and not alpha_out:
        raise ValueError(
            f"InfiniteTalk Video Combine: keyed frames need an alpha format ({', '.join(ALPHA_FORMATS)}) or a "
            f"background; '{fmt}' has no alpha: pick one, or connect a background"
        )
    if matte and not alpha_out:
        raise ValueError(f"InfiniteTalk Video Combine: matte needs an alpha format, not '{fmt}'")
    if alpha_out and (presenter is None or not presenter.alpha) and not (frames is None and mask is not None):
        what = "over the background" if presenter is not None else "not keyed"
        log.warning(
            "InfiniteTalk Video Combine: %s in '%s': the video is opaque (connect InfiniteTalk Key)",
            what,
            fmt,
        )


def _composited_result(out_path: Path, spec, stem: str, subfolder: str, fps: int, sound):
    """The output of a keyed or composited write, and its preview: a WebM with alpha (over a checkerboard in
    the editor) for alpha formats, an H.264 copy for opaque formats the browser cannot play."""
    from ..infinitetalk.media.export import iter_written, write_video

    if spec.name == "h264-mp4":
        result = ui.SavedResult(out_path.name, subfolder, io.FolderType.output)
        return io.NodeOutput(InputImpl.VideoFromFile(str(out_path)), ui=ui.PreviewVideo([result]))
    folder = Path(folder_paths.get_temp_directory()) / "infinitetalk_previews"
    folder.mkdir(parents=True, exist_ok=True)
    if spec.name == "webm-vp9":  # the file itself, under the name the checkerboard rule knows (a hard link)
        proxy = folder / f"{stem}_{ALPHA_PREVIEW}.webm"
        proxy.unlink(missing_ok=True)
        try:
            os.link(out_path, proxy)
        except OSError:
            shutil.copyfile(out_path, proxy)
        result = ui.SavedResult(proxy.name, "infinitetalk_previews", io.FolderType.temp)
        return io.NodeOutput(InputImpl.VideoFromFile(str(out_path)), ui=ui.PreviewVideo([result]))
    first = next(iter_written(out_path, 1))
    h, w = first.shape[1:3]
    if spec.alpha:
        proxy = folder / f"{stem}_{ALPHA_PREVIEW}.webm"
        chunks = iter_written(out_path)
        fmt = "webm-vp9"
    else:
        proxy = folder / f"{stem}_preview.mp4"
        chunks = (chunk[..., :3] for chunk in iter_written(out_path))
        fmt = "h264-mp4"
    proxy = write_video(
        proxy, chunks, fps=fps, width=w, height=h, fmt=fmt, crf=PROXY_CRF, preset="veryfast", audio=sound
    )
    video = out_path if spec.codec is not None else proxy
    result = ui.SavedResult(proxy.name, "infinitetalk_previews", io.FolderType.temp)
    return io.NodeOutput(InputImpl.VideoFromFile(str(video)), ui=ui.PreviewVideo([result]))


def _soundtrack(audio, frames):
    """The user's audio: the ``audio`` input, else the soundtrack the sampler's frames carry."""
    if audio is not None:
        return audio_to_numpy(audio)  # ((C, N), sr)
    if frames is not None:
        return frames.soundtrack
    return None


def _write(
    path: Path, frames, images, fps: int, fmt: str, crf: int, preset: str, sound, subtitles, burn,
    presenter=None, mask=None, matte=False,
):  # fmt: skip
    """The sampler's frames (their store: H.264 segments remuxed into h264-mp4) or an IMAGE batch, as ``fmt``;
    through ``presenter`` (key, background) when given."""
    from ..infinitetalk.media import write_video

    if frames is not None:
        frames.store.finalize(
            path,
            audio=sound,
            subtitles=subtitles,
            fmt=fmt,
            crf=crf,
            preset=preset,
            burn=burn,
            transform=presenter,
            matte=matte,
        )
        return
    chunks = _chunks_from_images(images, mask)
    width, height = images.shape[2], images.shape[1]
    if presenter is not None:
        chunks = presenter(chunks)
        width, height = presenter.output_size(width, height)
    write_video(
        path,
        chunks,
        fps=fps,
        width=width,
        height=height,
        fmt=fmt,
        crf=crf,
        preset=preset,
        audio=sound,
        subtitles=subtitles,
        burn=burn,
        matte=matte,
    )


def _proxy(frames, images, name: str, fps: int, sound, burn):
    """An H.264 + AAC copy in ComfyUI's temp folder for the browser; returns (path, subfolder)."""
    subfolder = "infinitetalk_previews"
    folder = Path(folder_paths.get_temp_directory()) / subfolder
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    _write(path, frames, images, fps, "h264-mp4", PROXY_CRF, "veryfast", sound, None, burn)
    return path, subfolder


def _chunks_from_images(images: torch.Tensor, mask: torch.Tensor | None = None):
    """uint8 RGB chunks, or RGBA with ``mask`` (one mask for all frames, or one per frame; resized)."""
    from ..infinitetalk.keying import subject_mask

    h, w = images.shape[1], images.shape[2]
    for start in range(0, images.shape[0], CHUNK):
        rgb = image_to_uint8(images[start : start + CHUNK])
        if mask is None:
            yield rgb
            continue
        m = mask if mask.ndim == 3 else mask[None]
        alphas = []
        for i in range(rgb.shape[0]):
            one = m[min(start + i, m.shape[0] - 1)].float().cpu().numpy()
            if one.shape != (h, w):
                one = subject_mask(one, h, w, name="mask")
            alphas.append((np.clip(one, 0, 1) * 255 + 0.5).astype(np.uint8))
        yield np.concatenate([rgb, np.stack(alphas)[..., None]], axis=-1)


NODES = [VideoCombine]
