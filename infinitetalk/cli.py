"""``python -m infinitetalk``: talking video from an image or video and speech (or text), any length.

Keeps the reference's flags (``generate_infinitetalk.py``), plus direct inputs instead of a JSON file::

    python -m infinitetalk --weights weights --input_path face.png --audio_path speech.wav \\
        --output_path out.mp4 --size infinitetalk-480

``--weights DIR``: a ComfyUI folder, its ``models/``, or the official ``weights/`` tree (or their parent); each
component is found by its content (infinitetalk.weights; ``python -m infinitetalk.doctor`` shows what was
found). Differences from the reference's defaults: ``--mode`` is
``streaming`` (the whole audio) and ``--max_frame_num`` has no limit unless given.

Several GPUs split each denoising step (sequence parallelism, docs/MULTI_GPU.md)::

    torchrun --nproc_per_node 4 -m infinitetalk ... --ulysses_size 4
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from .antidrift import check_noise_floor
from .audio_embedding import prepare_audio
from .buckets import target_size
from .build import (
    ModelOptions,
    load_pipeline,
    plan_dit,
)
from .cli_args import build_parser
from .composite import on_backdrop, presenter_options
from .config import VIDEO_FPS
from .encoders.wav2vec2 import load_audio_encoder
from .errors import CheckpointError, InfiniteTalkError, InputError
from .loading.discover import WeightPaths, find_weights
from .loading.dit import dit_heads
from .lora import parse_lora_spec
from .media import VideoReader, normalize_delivery, output_path, read_image
from .media.export import ALPHA_FORMATS
from .media.stream import read_audio
from .parallel.launch import ParallelSession, start_session, torchrun_ranks
from .pipeline import GenerationConfig, StillImage
from .preflight import RunShape, checkpoint_bytes
from .prompts import format_time, parse_prompt_schedule
from .runs import (
    GenerationRun,
    ModelIdentity,
    RunFolder,
    RunInputs,
    RunModels,
    RunOptions,
    partial_path,
    refuse_other_scheme,
    speaker_layout,
)
from .script import load_script, render_script
from .sinks import segment_codec
from .tts import KokoroTTS, check_tts_request, check_tts_text, speaker_tag
from .tts.kokoro import find_model_dir
from .validation import (
    check_audio,
    check_config,
    check_image_size,
    check_not_silent,
    check_video_frames,
    explain_out_of_memory,
    output_size,
    warn_if_upscaled,
)
from .validation import parse_boxes as parse_box_list
from .weights import Component, spec

__all__ = ["WeightPaths", "build_parser", "find_weights", "main", "parse_boxes", "run"]

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


# ============================================================================ weights discovery
# The files, their names and their discovery live in infinitetalk.weights (the one registry).


def parse_boxes(values: list[str]) -> list[tuple[float, float, float, float]]:
    """``--bbox`` values (given twice, or once as 'box1;box2') -> two boxes (or none)."""
    return parse_box_list(values, name="--bbox")


def _apply_json(args: argparse.Namespace) -> None:
    """Fill missing arguments from the reference's input JSON."""
    path = Path(args.input_json)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(
            f"--input_json '{path}' is unreadable ({err}): give the reference's JSON file"
        ) from err
    base = path.parent
    resolve = lambda p: str(p if Path(p).is_absolute() or Path(p).exists() else base / p)  # noqa: E731
    args.input_path = args.input_path or resolve(data["cond_video"])
    audio = data.get("cond_audio", {})
    args.audio_path = args.audio_path or (resolve(audio["person1"]) if audio.get("person1") else None)
    args.audio_path2 = args.audio_path2 or (resolve(audio["person2"]) if audio.get("person2") else None)
    args.audio_type = data.get("audio_type", args.audio_type)
    args.prompt = args.prompt if args.prompt is not None else data.get("prompt", "")
    if data.get("bbox") and not args.bbox:
        # The reference indexes mask[x_min:x_max, y_min:y_max]: its "x" is the row. Convert to x = column.
        boxes = [(y0, x0, y1, x1) for x0, y0, x1, y1 in data["bbox"].values()]
        args.bbox = [";".join(",".join(str(v) for v in b) for b in boxes)]


def load_source(path: str):
    """The reference: a still image (any mode: RGBA, greyscale, 16-bit are converted) or a video."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--input_path '{p}' does not exist: give an image or a video file")
    if p.suffix.lower() in VIDEO_EXTENSIONS:
        reader = VideoReader(p, fps=VIDEO_FPS)
        check_video_frames(reader.num_frames, p, name="--input_path")
        check_image_size(reader.height, reader.width, name=f"--input_path '{p.name}'")
        return reader
    image = read_image(p)
    check_image_size(*image.shape[:2], name=f"--input_path '{p.name}'")
    return StillImage(image)


def speech_inputs(
    args: argparse.Namespace, kokoro_dir: Path | None, spill_dir: Path | None = None
) -> tuple[list, bool, list | None]:
    """(speaker tracks [(wave, sr)], normalise?, caption cues) from --text or --audio_path(s), checked.
    Long recordings are decoded into file-backed buffers in ``spill_dir`` (:mod:`infinitetalk.spill`)."""
    if args.text is not None:
        return _tts_speech(args, kokoro_dir)
    if not args.audio_path and not args.audio_path2:
        raise InputError("no speech given: pass --audio_path (and --audio_path2 for two people) or --text")
    tracks, names = [], []
    for flag, path in (("--audio_path", args.audio_path), ("--audio_path2", args.audio_path2)):
        if path:
            if not Path(path).is_file():
                raise InputError(f"{flag} '{path}' does not exist: check the path")
            name = f"{flag} '{Path(path).name}'"
            # decoded block by block into one buffer at its own rate and channels (the soundtrack keeps them)
            wave, sr = read_audio(path, name=flag, spill_dir=spill_dir)
            tracks.append((check_audio(wave, sr, name=name), sr))
            names.append(name)
        elif args.audio_path2:
            tracks.append(None)  # a silent person 1
    check_not_silent([w for w, _ in filter(None, tracks)], names)
    if len(tracks) == 2 and tracks[0] is None:
        wave, sr = tracks[1]
        tracks[0] = (np.zeros(wave.shape[-1], np.float32), sr)
    return tracks, True, None


def _tts_speech(args: argparse.Namespace, kokoro_dir: Path | None) -> tuple[list, bool, list | None]:
    dialogue = bool(re.search(speaker_tag("[12]"), args.text, re.IGNORECASE))
    voices = {1: args.voice, 2: args.voice2} if dialogue else {1: args.voice}
    names = {1: "--voice", 2: "--voice2"}
    check_tts_request(
        find_model_dir(kokoro_dir), args.text, voices, args.lang, voice_names=names, lang_name="--lang"
    )
    tts = KokoroTTS(kokoro_dir)
    if dialogue:
        d = tts.speak_dialogue(args.text, voices, lang=args.lang)
        return [(t, d.sample_rate) for t in d.tracks], False, d.cues
    s = tts.speak(args.text, args.voice, lang=args.lang)
    return [(s.audio, s.sample_rate)], False, s.cues  # the reference does not normalise TTS audio


# ============================================================================ models
def script_inputs(script, args: argparse.Namespace, kokoro_dir: Path | None):
    """(speaker tracks, normalise?, captions, prompt schedule) of a script (segments rendered end to end)."""
    tts = None
    if script.needs_tts:
        tts = KokoroTTS(kokoro_dir)
    rendered = render_script(
        script, tts, lang=args.lang, seed=max(args.seed, 0), voices={1: args.voice, 2: args.voice2}
    )
    logger.info("script: %d segments, %.2f s", len(rendered.spans), rendered.duration)
    return [(t, rendered.sample_rate) for t in rendered.tracks], False, rendered.cues, rendered.prompts


def _device(args) -> torch.device:
    return torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def lora_specs(args) -> list[tuple[str, float]]:
    specs = [parse_lora_spec(s) for s in args.lora]
    scales = list(args.lora_scale) + [1.2] * (len(args.lora_dir) - len(args.lora_scale))  # reference default
    specs += list(zip(args.lora_dir, scales[: len(args.lora_dir)], strict=True))
    return specs


def model_options(args) -> ModelOptions:
    """The DiT options of the command line (``--quant`` is the reference's name for the quanto modes)."""
    quantization = args.quantization or (f"quanto_{args.quant}" if args.quant else "none")
    if args.quant and args.quantization and args.quantization != f"quanto_{args.quant}":
        raise InputError(
            f"--quant {args.quant} and --quantization {args.quantization} disagree: give only one of them"
        )
    return ModelOptions(
        precision=args.dtype or "auto",
        quantization=quantization,
        block_swap=args.block_swap,
        attention=args.attention,
        compile=args.compile,
        loras=tuple(lora_specs(args)),
    )


def plan_models(paths: WeightPaths, args, device: torch.device, run, world_size: int = 1):
    """Check the DiT options, files and memory before any weight is read (see ``infinitetalk.build``).

    Under torchrun (``world_size > 1``) each process holds only its share of the activations, which the
    single-process estimate does not model: the estimate is logged as an upper bound and not enforced."""
    options = model_options(args)
    dtype = options.compute_dtype(device)
    others = checkpoint_bytes(paths.vae, torch.float32)  # the VAE stays on the device
    if not args.offload_model:
        others += checkpoint_bytes(paths.text_encoder, dtype) + checkpoint_bytes(paths.clip, dtype)
    host_copy = True if args.offload_model else None  # None: only when blocks are swapped
    free = -1 if world_size == 1 else None
    plan = plan_dit(paths, options, device, run, free=free, host_copy=host_copy, other_resident=others)
    return options, plan


# ============================================================================ main
def _resolve_paths(args, speakers: int, need_kokoro: bool = False) -> WeightPaths:
    """Component paths: explicit flags (--ckpt_dir, --infinitetalk_dir, --wav2vec_dir) win over --weights."""
    given: dict[str, Path] = {}
    if args.ckpt_dir:
        ck = Path(args.ckpt_dir).expanduser()
        given["dit"] = ck
        for component in (Component.TEXT_ENCODER, Component.CLIP, Component.VAE):
            given[spec(component).field] = ck / spec(component).published("official").name
    if args.infinitetalk_dir:
        given["adapter"] = Path(args.infinitetalk_dir).expanduser()
    if args.wav2vec_dir:
        given["audio_encoder"] = Path(args.wav2vec_dir).expanduser()
    tts = args.text is not None or need_kokoro
    needed = {"dit", "adapter", "text_encoder", "clip", "vae", "audio_encoder"} | (
        {"kokoro"} if tts else set()
    )
    if args.weights:
        paths = find_weights(args.weights, speakers, need_kokoro=tts, given=given)
    elif needed <= set(given):
        paths = WeightPaths(**{k: given[k] for k in needed - {"kokoro"}}, kokoro=given.get("kokoro"))
    else:
        missing = sorted(needed - set(given))[0]
        raise InputError(
            f"no {missing.replace('_', ' ')} given: pass --weights DIR (ComfyUI, ComfyUI/models or weights/)"
        )
    for name, p in vars(paths).items():
        if p is not None and not p.exists():
            raise CheckpointError(
                f"{name.replace('_', ' ')} '{p}' does not exist: check the path or download it"
            )
    return paths


def _speaker_count(args, script=None) -> int:
    if script is not None:
        return script.num_speakers
    if args.text is not None:
        return 2 if re.search(speaker_tag("2"), args.text, re.IGNORECASE) else 1
    return 2 if args.audio_path2 else 1


def _config(args: argparse.Namespace, session: ParallelSession) -> GenerationConfig:
    return GenerationConfig(
        prompt=args.prompt or "",
        negative_prompt=args.n_prompt or None,
        mode=args.mode,
        size=args.size,
        frame_num=args.frame_num,
        motion_frame=args.motion_frame,
        max_frame_num=args.max_frame_num,
        steps=args.sample_steps,
        shift=args.sample_shift,
        text_scale=args.sample_text_guide_scale,
        audio_scale=args.sample_audio_guide_scale,
        seed=session.broadcast(args.seed if args.seed >= 0 else int(torch.randint(0, 99999999, (1,)).item())),
        color_correction_strength=args.color_correction_strength,
        sampler=args.sampler,
        use_apg=args.use_apg,
        apg_momentum=args.apg_momentum,
        apg_norm_threshold=args.apg_norm_threshold,
        use_teacache=args.use_teacache,
        teacache_thresh=args.teacache_thresh,
        batch_guidance=args.batch_guidance,
        latent_motion=args.latent_motion,
        color_anchor=args.color_anchor,
    )


def check_arguments(args: argparse.Namespace, session: ParallelSession):
    """The settings, the output and the text, before anything is read: ``(output path, config)``."""
    prompt_name = _read_prompt_file(args)
    if args.input_json:
        _apply_json(args)
    if not args.input_path:
        raise InputError("no reference given: pass --input_path (an image or a video)")
    _prompt_schedule(args, prompt_name)
    config = _config(args, session)
    check_config(config, size_name="--size")
    if args.resume and args.seed < 0:
        raise InputError("--resume needs a fixed --seed (the interrupted run's seed)")

    check_noise_floor(args.silence_noise_floor, name="--silence_noise_floor")
    if not 0 <= args.crf <= 51:
        raise InputError(f"--crf {args.crf} is outside 0..51: use 18 (visually lossless) to 28 (small)")
    out = Path(args.output_path or (args.save_file + ".mp4" if args.save_file else "infinitetalk.mp4"))
    out = output_path(out, args.format)  # the format decides the suffix (a folder for png-wav)
    args.presenter_plan = presenter_options(  # alpha options checked before any weight is read
        args.key or args.format in ALPHA_FORMATS,
        args.key_color,
        args.background,
        args.presenter,
        args.matte,
        args.format,
    )
    if out.is_dir() and args.format != "png-wav":
        raise InputError(f"--output_path '{out}' is a folder: give a file name such as '{out / 'talk.mp4'}'")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(
            f"--output_path '{out}': cannot create the folder '{out.parent}' ({err.strerror}); pick another place"
        ) from None
    if args.text is not None:
        check_tts_text(args.text, name="--text")
    return out, config


def _read_prompt_file(args: argparse.Namespace) -> str:
    """``--prompt_file`` -> ``args.prompt``; returns the name of the prompt's input for errors."""
    if not getattr(args, "prompt_file", None):
        return "--prompt"
    if args.prompt is not None:
        raise InputError("both --prompt and --prompt_file given: keep one")
    name = f"--prompt_file '{args.prompt_file}'"
    try:
        args.prompt = Path(args.prompt_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{name} cannot be read ({err}): give a UTF-8 text file") from err
    return name


def _prompt_schedule(args: argparse.Namespace, name: str) -> None:
    """A prompt with time tags -> ``args.prompt_schedule`` ``[(first video frame, prompt)]`` and
    ``args.prompt`` the opening prompt; without tags ``args.prompt_schedule`` is None, the prompt untouched."""
    schedule = parse_prompt_schedule(args.prompt or "", name=name)
    args.prompt_schedule = None
    if len(schedule) == 1 and schedule[0][1] != (args.prompt or ""):  # one tag: a plain prompt
        args.prompt = schedule[0][1]
    if len(schedule) > 1:
        if getattr(args, "script", None):
            raise InputError(f"{name} has time tags and --script is given: set the prompts in the script")
        args.prompt_schedule, args.prompt = schedule, schedule[0][1]
        for start, prompt in schedule:
            logger.info("prompt from %s: %s", format_time(start), prompt)


def check_inputs(args: argparse.Namespace, config, speakers: int):
    """The reference (image or video) and the person regions: ``(source, regions)``, checked. Two speakers
    without --bbox: found from the faces, as the Sampler does (:func:`infinitetalk.runs.speaker_layout`)."""

    source = load_source(args.input_path)
    if args.backdrop:  # the person on a key-colour backdrop, so the video can be keyed
        source, args.backdrop_color = on_backdrop(source, args.backdrop, args.key_color)
    first = source.frame(0)
    h, w = first.shape[:2]
    name = f"--input_path '{Path(args.input_path).name}'"
    warn_if_upscaled(h, w, *output_size(config.size, h, w, name="--size"), name=name)
    fix = "add --audio_path2 (or '(s2)' turns in --text), or drop --bbox"
    regions, _ = speaker_layout(
        speakers, first, boxes=args.bbox, boxes_name="--bbox", masks_name=None, fix=fix
    )
    return source, regions


def run(args: argparse.Namespace, session: ParallelSession | None = None) -> Path:
    """Generate the video described by ``args``; returns the output path (written by rank 0 only).

    The command line's host work (arguments, files, models, progress, the output file) around the library's
    one run (:class:`infinitetalk.runs.GenerationRun`), the same as the ComfyUI Sampler's."""

    session = session or ParallelSession(device=_device(args))
    args.device = str(session.device)  # under torchrun: this process's GPU
    out, config = check_arguments(args, session)
    script = _load_script(args)
    speakers = _speaker_count(args, script)
    paths = _resolve_paths(args, speakers, need_kokoro=script is not None and script.needs_tts)
    session.check_heads(dit_heads(paths.dit))  # heads vs --ulysses_size, before any weight is read
    device = _device(args)
    source, regions = check_inputs(args, config, speakers)
    if args.face_only and source.num_frames < 2:
        raise InputError("--face_only needs a source video as --input_path (one image has no source to keep)")
    # 0. options, files and memory, before any weight is read
    height, width = target_size(config.size, *source.frame(0).shape[:2])
    run_shape = RunShape.for_generation(config, height, width, speakers)
    options, plan = plan_models(paths, args, device, run_shape, session.world_size)
    # the run folder: segments, resume state, and the audio buffers too large for memory
    seg_dir = Path(args.segments_dir) if args.segments_dir else out.with_name(out.name + ".parts")
    if args.resume:
        refuse_other_scheme(seg_dir)  # a folder of an earlier version: refused before any weight is read
    prompts = args.prompt_schedule  # None without time tags
    if script is not None:
        tracks, normalize, cues, prompts = script_inputs(script, args, paths.kokoro)
    else:
        tracks, normalize, cues = speech_inputs(args, paths.kokoro, seg_dir)
    # 1. audio features first (the encoder is freed before the big models load), 2. the models
    audio = encode_speech(
        paths, tracks, args.audio_type, normalize, device, seg_dir, args.silence_noise_floor
    )
    del tracks  # a one-speaker soundtrack lives on in ``audio``
    models = load_models(paths, options, plan, device, args.offload_model, session, lora_specs(args))
    # 3. the one run: per-window segments in the run folder, then the output file
    inputs = RunInputs(source, audio, regions, tuple(prompts) if prompts else None, args.face_only)
    job = GenerationRun(inputs, config, models, run_options(args, audio, session))
    folder = RunFolder(seg_dir, partial_path(out), resume_hint="run again with --resume to continue")
    if session.is_main and not args.no_live:
        logger.info("watch it while it is made: %s", seg_dir / "live" / "live.m3u8")
    with _ProgressBar(config.steps) as bar:
        done = job.generate(folder, on_progress=bar.update, session=session)
    if not session.is_main:
        return out  # rank 0 writes the file
    return deliver(done, out, cues if args.subtitles else None, args, seg_dir)


def _load_script(args):
    if not args.script:
        return None

    return load_script(args.script)


def encode_speech(
    paths: WeightPaths, tracks, audio_type: str, normalize: bool, device, spill_dir: Path, noise_floor_db=None
):
    """wav2vec2 features of the speaker tracks (the encoder loaded for this only, then freed)."""

    with explain_out_of_memory("encoding the audio"):
        encoder = load_audio_encoder(paths.audio_encoder, device=device, dtype=torch.float32)
        audio = prepare_audio(
            encoder, tracks, audio_type, normalize, spill_dir=spill_dir, noise_floor_db=noise_floor_db
        )
    seconds = audio.num_frames / VIDEO_FPS
    logger.info("audio: %d speaker(s), %d frames (%.2f s)", audio.num_speakers, audio.num_frames, seconds)
    return audio


def load_models(paths: WeightPaths, options: ModelOptions, plan, device, offload: bool, session, loras=()):
    """The pipeline over the loaded models (placed as planned) and their identity."""

    with explain_out_of_memory("loading the models"):
        pipe = load_pipeline(paths, options, plan, device, offload)
    session.attach(pipe.dit)  # one process: unchanged; torchrun: this process's share of every forward
    files = {k: getattr(paths, k) for k in ("dit", "adapter", "text_encoder", "tokenizer", "clip", "vae")}
    identity = ModelIdentity.of(
        files, loras=loras, quantization=options.quantization, dtype=plan.compute_dtype
    )
    return RunModels(pipe, identity)


def run_options(args: argparse.Namespace, audio, session: ParallelSession):
    """Segments for the output format (masters start from exact frames); the delivered soundtrack."""

    soundtrack = audio.soundtrack_audio  # the user's own audio; the 16 kHz mix stays in the embedding path
    if args.loudness is not None and session.is_main:
        soundtrack = normalize_delivery(soundtrack, args.loudness, args.true_peak)
    return RunOptions(
        storage=segment_codec(args.format),
        crf=args.crf,
        preset=args.preset,
        resume=args.resume,
        live=not args.no_live,
        report=not args.no_report,
        soundtrack=soundtrack,
    )


def deliver(done, out: Path, subtitles, args: argparse.Namespace, seg_dir: Path) -> Path:
    """The output file from the finished run's segments; the run folder removed unless kept."""
    final = done.store.finalize(
        out,
        audio=done.soundtrack,
        subtitles=subtitles,
        fmt=args.format,
        crf=args.crf,
        preset=args.preset,
        transform=args.presenter_plan.build(getattr(args, "backdrop_color", None)),
        matte=args.matte,
    )
    if done.report is not None:  # the drift report beside the output: OUTPUT.report.png / .json
        done.report.write(out.with_suffix(""))
    if not args.keep_segments:
        shutil.rmtree(seg_dir, ignore_errors=True)
    frames, windows = done.result.num_frames, done.result.num_windows
    logger.info("wrote %s: %d frames (%.2f s) in %d windows", final, frames, frames / VIDEO_FPS, windows)
    return final


class _ProgressBar:
    """tqdm over windows x steps (created when the number of windows is known)."""

    def __init__(self, steps: int):
        self.steps, self.bar = steps, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()

    def update(self, event) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=event.num_windows * event.num_steps, unit="step", dynamic_ncols=True)
            self.bar.update(event.window * event.num_steps)  # resumed runs start later
        if event.step > 0:
            self.bar.set_description(f"window {event.window + 1}/{event.num_windows}")
            self.bar.update(1)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank = torchrun_ranks()[0]  # under torchrun only rank 0 logs progress
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="[%(asctime)s] %(levelname)s: %(message)s",
    )
    session = None
    try:
        session = start_session(args.ulysses_size, args.ring_size, args.device)
        with torch.no_grad():
            path = run(args, session)
    except InfiniteTalkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run again with --resume to continue", file=sys.stderr)
        return 130
    finally:
        if session is not None:
            session.close()
    if session.is_main:
        print(path)
    return 0
