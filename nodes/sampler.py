"""The streaming sampler: InfiniteTalk generation of any length, window by window, streamed to disk.

Two nodes: **InfiniteTalk Sampler** keeps the inputs every run needs; the expert knobs (scheduler, shift,
window sizes, colour correction, APG, TeaCache, speaker boxes, resume, segment storage) live on the optional
**InfiniteTalk Sampler Options** node, the pattern of ComfyUI's own split samplers and of the large video
packs (face-only dubbing is one of those knobs). Without it the reference's defaults apply. Workflows saved with the older 26-input Sampler are
migrated when they load (:mod:`nodes._migrate`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..infinitetalk.pipeline import GenerationConfig
from ..infinitetalk.sampling import SAMPLERS as LIBRARY_SAMPLERS
from ..infinitetalk.sinks import SEGMENT_CODECS
from ..infinitetalk.validation import FRAME_NUM, MAX_FRAMES, MOTION_FRAME, OUTPUT_SIDE, STEPS
from . import _bridge, _core, _models, _runs
from . import _common as c
from ._api import io, ui
from ._widgets import choice, dynamic_combo

log = logging.getLogger(__name__)

SIZES = ["infinitetalk-480", "infinitetalk-720", "custom"]
SAMPLERS = list(LIBRARY_SAMPLERS)
OPTIONS_TYPE = "INFINITETALK_SAMPLER_OPTIONS"


_G = GenerationConfig()  # the reference's generation defaults: one home, read here and by the command line


@dataclass(frozen=True)
class SamplerOptions:
    """The expert knobs of the Sampler; the defaults are the reference's (``GenerationConfig``)."""

    shift: float = 0.0  # 0: automatic (7 at 480p, 11 at 720p)
    scheduler: str = _G.sampler
    frame_num: int = _G.frame_num
    motion_frame: int = _G.motion_frame
    max_frames: int = 0  # 0: the whole audio
    color_correction: float = _G.color_correction_strength
    apg: bool = _G.use_apg
    teacache: float = 0.0  # 0: off
    speaker_boxes: str = ""
    face_only: bool = False  # video-to-video: keep the source outside the face
    resume: bool = True
    storage: str = "h264"  # how finished windows are kept: infinitetalk.sinks.SEGMENT_CODECS
    latent_motion: bool = False  # drift: motion frames carried as latents (infinitetalk.antidrift)
    color_anchor: float = 0.0  # drift: ΔE past which colours are anchored to the reference (0: off)


DEFAULTS = SamplerOptions()


# ------------------------------------------------------------------------------------------- options node
def _option_inputs() -> list:
    d = DEFAULTS
    return [
        io.Combo.Input(
            "scheduler",
            options=SAMPLERS,
            default=d.scheduler,
            tooltip="Sampler: euler as the reference; unipc / dpm++ from diffusers.",
        ),
        io.Float.Input(
            "shift",
            default=d.shift,
            min=0.0,
            max=30.0,
            step=0.1,
            tooltip="Flow-matching timestep shift; 0 = automatic (7 at 480p, 11 at 720p; small values with "
            "distill LoRAs).",
        ),
        io.Int.Input(
            "frame_num",
            default=d.frame_num,
            min=FRAME_NUM.lo,  # the library's bounds: they hold through the API too
            max=FRAME_NUM.hi,
            step=FRAME_NUM.step,
            tooltip="Frames per window (4n+1). 81 as trained; fewer is faster but less coherent.",
        ),
        io.Int.Input(
            "motion_frame",
            default=d.motion_frame,
            min=MOTION_FRAME.lo,
            max=MOTION_FRAME.hi,
            step=MOTION_FRAME.step,
            tooltip="Frames carried from one window into the next (4n+1, below frame_num).",
        ),
        io.Int.Input(
            "max_frames",
            default=d.max_frames,
            min=MAX_FRAMES.lo,
            max=MAX_FRAMES.hi,
            step=1,
            tooltip="Stop after this many frames (25 per second); 0 = the whole audio.",
        ),
        io.Float.Input(
            "color_correction",
            default=d.color_correction,
            min=0.0,
            max=1.0,
            step=0.05,
            tooltip="Strength of the colour transfer to the input image on every window: keeps long videos "
            "from drifting in colour (1 = full, 0 = off).",
        ),
        io.Boolean.Input(
            "apg",
            default=d.apg,
            tooltip="Adaptive projected guidance (momentum -0.75, norm threshold 55): fewer over-saturation "
            "artefacts at high scales.",
        ),
        io.Float.Input(
            "teacache",
            default=d.teacache,
            min=0.0,
            max=1.0,
            step=0.01,
            tooltip="TeaCache threshold: skip model calls whose input barely changed (0 = off, 0.2 about 2x "
            "faster with small quality loss).",
        ),
        io.String.Input(
            "speaker_boxes",
            default=d.speaker_boxes,
            tooltip="Two speakers only: 'x0,y0,x1,y1; x0,y0,x1,y1' boxes of person 1 and 2 in source-image "
            "pixels (overrides the sampler's speaker_masks). Empty = masks, else found from the faces.",
        ),
        *_run_option_inputs(d),
    ]


def _run_option_inputs(d: SamplerOptions) -> list:
    """Dubbing, resume, segment storage and the ways to bound drift."""
    return [
        io.Boolean.Input(
            "face_only",
            default=d.face_only,
            tooltip="Video-to-video only: keep every source pixel outside a feathered region around the face "
            "(tracked per frame, colour-matched), so body, background and cuts stay the source's.",
        ),
        io.Boolean.Input(
            "resume",
            default=d.resume,
            tooltip="After a cancelled run, queue again with the same inputs to continue from the last "
            "finished window instead of starting over.",
        ),
        io.Combo.Input(
            "storage",
            options=list(SEGMENT_CODECS),
            default=d.storage,
            tooltip="How finished windows are kept until Video Combine writes the file. h264: H.264 CRF 18 "
            "(small; h264-mp4 output is a remux). h264-lossless: the exact frames, so prores-mov, ffv1-mkv "
            "and png-wav masters are made from them (tens of times larger: about 5 MB per second at 480p). "
            "A run keeps one kind: changing it starts the run over.",
        ),
        io.Boolean.Input(
            "latent_motion",
            default=d.latent_motion,
            tooltip="Drift: carry the motion frames across window joins as latents instead of decoding and "
            "re-encoding them (one VAE encode less per window, no round-trip loss of colour and detail; "
            "approximate). Off: the reference's way.",
        ),
        io.Float.Input(
            "color_anchor",
            default=d.color_anchor,
            min=0.0,
            max=30.0,
            step=0.5,
            tooltip="Drift: in windows whose face or background colour is more than this many ΔE from the "
            "reference (measured after the colour correction), anchor face and background separately to "
            "the reference's colours. 0 = off; about 4.",
        ),
    ]


def check_options(frame_num=_G.frame_num, motion_frame=_G.motion_frame, speaker_boxes="") -> str | None:
    """The message for inconsistent options (None when they are fine); ComfyUI checks the bounds itself.
    The messages are the library's (:mod:`infinitetalk.validation`), the command line's too."""
    from ..infinitetalk.errors import InputError
    from ..infinitetalk.validation import check_window, parse_boxes

    try:
        if isinstance(frame_num, int) and isinstance(motion_frame, int):
            check_window(frame_num, motion_frame)
        if isinstance(speaker_boxes, str) and speaker_boxes.strip():
            parse_boxes(speaker_boxes)
    except InputError as err:
        return str(err)
    return None


class SamplerOptionsNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfiniteTalkSamplerOptions",
            display_name="InfiniteTalk Sampler Options",
            category=c.CATEGORY_SAMPLING,
            description="Expert settings for InfiniteTalk Sampler (connect to its 'options' input): scheduler, "
            "shift, window and motion frames, length cap, colour correction, APG, TeaCache, speaker boxes, "
            "face-only dubbing, resume, how finished windows are stored (H.264 or lossless). Without this "
            "node the sampler uses the reference's defaults.",
            inputs=_option_inputs(),
            outputs=[
                io.Custom(OPTIONS_TYPE).Output(
                    display_name="options", tooltip="Connect to the 'options' input of InfiniteTalk Sampler."
                )
            ],
        )

    @classmethod
    def validate_inputs(cls, frame_num=_G.frame_num, motion_frame=_G.motion_frame, speaker_boxes=""):
        # No **kwargs: ComfyUI then still checks the bounds of every other input itself.
        return check_options(frame_num, motion_frame, speaker_boxes) or True

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        return io.NodeOutput(SamplerOptions(**values))


# ------------------------------------------------------------------------------------------- sampler node
def _model_inputs() -> list:
    """The models, the conditioning, the reference (image or video), speaker masks and the options node."""
    return [
        io.Custom("INFINITETALK_MODEL").Input(
            "model", tooltip="From InfiniteTalk Model Loader (optionally through InfiniteTalk LoRA)."
        ),
        io.MultiType.Input(
            "vae",
            types=[io.Custom("INFINITETALK_VAE"), io.Custom(_core.VAE)],
            tooltip="From InfiniteTalk VAE Loader, or ComfyUI's Load VAE (wan_2.1_vae).",
        ),
        io.MultiType.Input(
            "clip_vision",
            types=[io.Custom("INFINITETALK_CLIP_VISION"), io.Custom(_core.CLIP_VISION)],
            tooltip="From InfiniteTalk CLIP Vision Loader, or ComfyUI's Load CLIP Vision (clip_vision_h).",
        ),
        io.Custom("INFINITETALK_TEXT_EMBEDS").Input("text_embeds", tooltip="From InfiniteTalk Text Encode."),
        io.MultiType.Input(
            "audio_embeds",
            types=[io.Custom("INFINITETALK_AUDIO_EMBEDS"), io.Custom(_core.AUDIO_ENCODER_OUTPUT)],
            tooltip="From InfiniteTalk Audio Embed (its length sets the video length). Also accepts ComfyUI's "
            "Audio Encoder Encode output (one speaker): its features were computed at 50 Hz and are "
            "interpolated to 25 fps as ComfyUI's own InfiniteTalk node does, which is not the reference's "
            "computation; for the reference's features connect Load Audio Encoder to InfiniteTalk Audio Embed.",
        ),
        io.Image.Input(
            "image",
            optional=True,
            tooltip="Image-to-video: the portrait to animate. A batch of several images is used as a 25 fps "
            "source video instead (video-to-video). Give this or 'video'.",
        ),
        io.Video.Input(
            "video",
            optional=True,
            tooltip="Video-to-video dubbing: the source video (e.g. from Load Video). Every window takes its "
            "reference frame from it, so the camera and body motion follow the source. A trim or crop made "
            "in the editor is applied.",
        ),
        io.Mask.Input(
            "speaker_masks",
            optional=True,
            tooltip="Two speakers only: a batch of two masks (person 1, person 2) in source-image pixels. "
            "Default: found from the two faces in the image (person 1 = left; see InfiniteTalk Find Speakers), "
            "or the left and right halves when no face is found.",
        ),
        io.Custom(OPTIONS_TYPE).Input(
            "options",
            optional=True,
            tooltip="Expert settings from InfiniteTalk Sampler Options (scheduler, shift, window sizes, "
            "colour correction, APG, TeaCache, speaker boxes, face-only dubbing, resume, segment storage). "
            "Not connected: the reference's defaults.",
        ),
    ]


def _inputs() -> list:
    width = io.Int.Input(
        "width",
        default=832,
        min=64,
        max=OUTPUT_SIDE.hi,
        step=OUTPUT_SIDE.step,
        tooltip="Output width in pixels (multiple of 16).",
    )
    height = io.Int.Input(
        "height",
        default=480,
        min=64,
        max=OUTPUT_SIDE.hi,
        step=OUTPUT_SIDE.step,
        tooltip="Output height in pixels (multiple of 16).",
    )
    size = io.Combo.Input(
        "size",
        options=SIZES,
        default=_G.size,
        tooltip="Output size: infinitetalk-480 picks the closest aspect bucket of about 640x640 pixels "
        "(832x480 for 16:9), infinitetalk-720 of about 960x960; the image is resized to cover and "
        "centre-cropped. custom: width x height.",
    )
    return [
        *_model_inputs(),
        io.Combo.Input(
            "mode",
            options=["streaming", "clip"],
            default=_G.mode,
            tooltip="streaming: the whole audio, in overlapping windows (any length). clip: one window only.",
        ),
        io.Int.Input(
            "steps",
            default=_G.steps,
            min=STEPS.lo,
            max=STEPS.hi,
            step=1,
            tooltip="Denoising steps per window: 40 as the reference; 4-8 with a step-distill LoRA.",
        ),
        io.Int.Input(
            "seed",
            default=_G.seed,
            min=0,
            max=0xFFFFFFFFFFFFFFFF,
            control_after_generate=True,
            tooltip="Seed of the initial noise of every window (same seed + inputs = same video).",
        ),
        io.Float.Input(
            "text_scale",
            default=_G.text_scale,
            min=0.0,
            max=20.0,
            step=0.1,
            tooltip="Text guidance scale (5 as the reference; 1 with distill LoRAs: one pass less).",
        ),
        io.Float.Input(
            "audio_scale",
            default=_G.audio_scale,
            min=0.0,
            max=20.0,
            step=0.1,
            tooltip="Audio guidance scale: how strongly the lips follow the audio (4; about 2 with distill LoRAs).",
        ),
        # last, so that its revealed inputs keep the widget order of workflows saved either way
        *dynamic_combo(size, {"custom": [width, height]}),
    ]


class Sampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfiniteTalkSampler",
            display_name="InfiniteTalk Sampler",
            category=c.CATEGORY_SAMPLING,
            description="Generates a talking video as long as the audio, in overlapping 81-frame windows. Frames go "
            "to disk window by window (memory stays flat whatever the length); a cancelled run resumes. Expert "
            "settings: connect InfiniteTalk Sampler Options.",
            inputs=_inputs(),
            outputs=[
                io.Custom("INFINITETALK_FRAMES").Output(
                    display_name="frames",
                    tooltip="The video frames on disk (+ soundtrack): connect to InfiniteTalk Video Combine.",
                ),
                io.Image.Output(
                    display_name="images",
                    tooltip="The frames as an IMAGE batch (only decoded when connected: long videos need a lot "
                    "of RAM).",
                ),
            ],
            hidden=[io.Hidden.unique_id, io.Hidden.prompt],
        )

    @classmethod
    def validate_inputs(cls, size="infinitetalk-480"):
        # No **kwargs: ComfyUI then still checks the bounds of every other input itself.
        name = choice(size, "size")[0] if isinstance(size, (str, dict)) else None
        if name is not None and name not in SIZES:
            return f"size '{name}' is unknown: use {', '.join(SIZES)} (custom: width x height)"
        return True

    @classmethod
    def execute(
        cls,
        model,
        vae,
        clip_vision,
        text_embeds,
        audio_embeds,
        mode,
        size,
        steps,
        seed,
        text_scale,
        audio_scale,
        image=None,
        video=None,
        speaker_masks=None,
        options=None,
        width=832,
        height=480,
    ) -> io.NodeOutput:
        from ..infinitetalk.validation import check_config, output_size, warn_if_upscaled

        _runs.check_node_id(cls.hidden.unique_id)  # it names the run folder
        opts = options if options is not None else DEFAULTS
        problem = check_options(opts.frame_num, opts.motion_frame, opts.speaker_boxes)
        if problem:
            raise ValueError(f"InfiniteTalk Sampler Options: {problem}")
        size_name, custom = choice(size, "size", {"width": width, "height": height})
        if _core.is_audio_encoder_output(audio_embeds):
            audio_embeds = _core.audio_embeds(audio_embeds)
        vae, clip_vision = _core.pack_vae(vae), _core.pack_clip_vision(clip_vision)
        config = _config(mode, size_name, custom, steps, seed, text_scale, audio_scale, opts)
        check_config(config)
        with _bridge.reference_source(image, video, c.FPS) as source:
            source = _as_source(source)
            h, w = source.frame(0).shape[:2]
            warn_if_upscaled(h, w, *output_size(config.size, h, w))
            regions, preview = _regions(opts.speaker_boxes, speaker_masks, audio_embeds.num_speakers, source)
            frames = cls._generate(
                model, vae, clip_vision, text_embeds, audio_embeds, source, config, regions, opts
            )
        wanted = _output_connected(cls.hidden.prompt, cls.hidden.unique_id, 1)
        images = _images(frames) if wanted else _first(frames)
        return io.NodeOutput(
            frames, images, ui=None if preview is None else ui.PreviewImage(preview, cls=cls)
        )

    @classmethod
    def _generate(cls, model, vae, clip_vision, text_embeds, audio_embeds, source, config, regions, opts):
        """The library's one run (memory planned first) into this node's run folder; the frames on disk."""
        from ..infinitetalk.buckets import target_size
        from ..infinitetalk.runs import GenerationRun, RunFolder, RunInputs, RunOptions

        if opts.face_only and source.num_frames < 2:
            raise ValueError(
                "face_only needs a source video ('video' input, or an IMAGE batch of frames): with one image "
                "there is no source to keep; turn face_only off"
            )
        height, width = target_size(config.size, *source.frame(0).shape[:2])
        dit_run = _models.prepare_dit(model, config, height, width, audio_embeds.num_speakers)
        schedule = getattr(text_embeds, "schedule", None)  # per-segment prompts (InfiniteTalk Script)
        prompts = tuple((int(f), str(t)) for f, t in schedule) if schedule else None
        run = GenerationRun(
            RunInputs(source, audio_embeds, regions, prompts, opts.face_only),
            config,
            _run_models(model, vae, clip_vision, text_embeds, dit_run),
            RunOptions(storage=opts.storage, resume=opts.resume, clips=True),  # clips: shown per window
        )
        node, prompt = cls.hidden.unique_id, cls.hidden.prompt
        folder = RunFolder(
            _runs.store_dir(node, run.fingerprint),  # survives a restart: the run can resume
            _runs.partial_file(prompt, node, run.fingerprint),  # the partial video in the output folder
            _runs.preview_dir(node, run.fingerprint),
            resume_hint="queue again to resume",
        )
        try:
            done = run.generate(
                folder,
                on_progress=_bridge.Progress(config.steps, node),
                should_cancel=_bridge.should_cancel,
                on_segment=_bridge.WindowPreview(node, _bridge.preview_nodes(prompt, node)),
            )
        finally:
            if dit_run.swap is not None:
                dit_run.swap.release()
        w, h = done.store.size
        frames = _bridge.FrameStream(
            done.store, done.result.num_frames, w, h, c.FPS, done.soundtrack, done.report
        )
        _runs.remove_when_released(frames, done.store.directory)  # a finished run goes once ComfyUI drops it
        return frames


def _run_models(model, vae, clip_vision, text_embeds, dit_run):
    """The pipeline over the loaded models (placed through ComfyUI) and their identity."""
    from ..infinitetalk.pipeline import InfiniteTalkPipeline
    from ..infinitetalk.runs import ModelIdentity, RunModels

    text = _bridge.FixedText(
        text_embeds.positive, text_embeds.negative, getattr(text_embeds, "by_prompt", None)
    )
    pipe = InfiniteTalkPipeline(
        model.patcher.model,
        vae.obj,
        clip_vision.obj,
        text,
        device=model.load_device,
        dtype=model.dtype,
        model_manager=_bridge.ComfyModelManager({"dit": model, "vae": vae, "clip": clip_vision}, dit_run),
    )
    identity = ModelIdentity.of(
        {"dit": model.source, "adapter": model.adapter, "vae": vae.source, "clip": clip_vision.source},
        loras=model.loras,
        quantization=model.plan.options.quantization,
        dtype=model.dtype,
        text_embeddings=(text_embeds.positive, text_embeds.negative),
    )
    return RunModels(pipe, identity)


def _config(mode, size_name, custom, steps, seed, text_scale, audio_scale, opts: SamplerOptions):
    return GenerationConfig(
        mode=mode,
        size=f"{custom['width']}x{custom['height']}" if size_name == "custom" else size_name,
        frame_num=opts.frame_num,
        motion_frame=opts.motion_frame,
        max_frame_num=opts.max_frames or None,
        steps=steps,
        shift=opts.shift or None,
        text_scale=text_scale,
        audio_scale=audio_scale,
        seed=seed,
        color_correction_strength=opts.color_correction,
        sampler=opts.scheduler,
        use_apg=opts.apg,
        use_teacache=opts.teacache > 0,
        teacache_thresh=opts.teacache or _G.teacache_thresh,
        latent_motion=opts.latent_motion,
        color_anchor=opts.color_anchor,
    )


def _as_source(source):
    from ..infinitetalk.pipeline import StillImage

    return StillImage(source) if isinstance(source, np.ndarray) else source


def parse_boxes(text: str) -> list[tuple[float, float, float, float]]:
    """'x0,y0,x1,y1; x0,y0,x1,y1' -> two boxes (the speaker_boxes format; ValueError with the fix)."""
    from ..infinitetalk.validation import parse_speaker_regions

    return parse_speaker_regions(text).bboxes


def _regions(boxes_text: str, masks, num_speakers: int, source):
    """(speaker regions or None, preview IMAGE of regions found from the faces or None): the library's one
    decision (:func:`infinitetalk.runs.speaker_layout`), the preview drawn here."""
    from ..infinitetalk.portrait import draw_regions
    from ..infinitetalk.runs import speaker_layout

    first = source.frame(0)
    regions, found = speaker_layout(num_speakers, first, boxes=boxes_text, masks=masks)
    return regions, _bridge.uint8_to_image(draw_regions(first, regions)) if found else None


def _output_connected(prompt, node_id, slot: int) -> bool:
    """True when another node of the queued graph reads output ``slot`` of this node."""
    if not isinstance(prompt, dict) or node_id is None:
        return True
    for node in prompt.values():
        for value in (node.get("inputs") or {}).values():
            if (
                isinstance(value, list)
                and len(value) == 2
                and str(value[0]) == str(node_id)
                and value[1] == slot
            ):
                return True
    return False


def _images(frames) -> torch.Tensor:
    out = torch.empty((frames.num_frames, frames.height, frames.width, 3), dtype=torch.float32)
    for i, frame in enumerate(frames.iter_frames()):
        if i >= frames.num_frames:
            break
        out[i] = _bridge.uint8_to_image(frame)[0]
    return out


def _first(frames) -> torch.Tensor:
    for frame in frames.iter_frames():
        return _bridge.uint8_to_image(frame)
    return torch.zeros((1, frames.height, frames.width, 3))


OPTION_NAMES = tuple(asdict(DEFAULTS))
NODES = [Sampler, SamplerOptionsNode]
