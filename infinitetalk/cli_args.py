"""The flags of ``python -m infinitetalk`` (:func:`build_parser`): the reference's, plus direct inputs, outputs,
weights, alpha and drift options. Defaults come from their homes (``GenerationConfig()``, the registry); the
command line itself (:mod:`infinitetalk.cli`) checks the values and runs.
"""

from __future__ import annotations

import argparse

from .attention import BACKENDS
from .build import (
    NO_SWAP,
    PRECISIONS,
    QUANTIZATIONS,
    BlockSwap,
)
from .errors import InputError
from .media.export import ALPHA_FORMATS
from .pipeline import GenerationConfig
from .sampling import SAMPLERS
from .weights import DEFAULT_VOICES


def _block_swap(text: str) -> BlockSwap:
    try:
        return BlockSwap.parse(text)
    except InputError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a block count: use 0, 1, ... or auto") from None


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "y", "on"):
        return True
    if text.lower() in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"'{text}' is not a boolean: use true or false")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m infinitetalk",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for add in (
        _input_arguments,
        _output_arguments,
        _alpha_arguments,
        _weight_arguments,
        _generation_arguments,
    ):
        add(p)
    m = p.add_argument_group("several GPUs (start with torchrun --nproc_per_node N; docs/MULTI_GPU.md)")
    m.add_argument(
        "--ulysses_size",
        type=int,
        default=1,
        help="processes splitting the attention heads (all-to-all); must divide the DiT's heads (40)",
    )
    m.add_argument(
        "--ring_size",
        type=int,
        default=1,
        help="processes passing key/value blocks around a ring; ulysses_size x ring_size = processes",
    )
    return p


def _alpha_arguments(p: argparse.ArgumentParser) -> None:
    a = p.add_argument_group("transparent background and compositing (docs/COMPOSITING.md)")
    a.add_argument(
        "--backdrop",
        metavar="MASK",
        help="subject mask image of --input_path (white = person, from any background remover): the person is "
        "put on a plain key-colour backdrop before generation, so the video can be keyed",
    )
    a.add_argument(
        "--key_color",
        default="auto",
        help="backdrop / key colour: auto (chosen far from the person's colours; measured on the frames when "
        "keying), green, blue, magenta, cyan, yellow, red, #rrggbb or r,g,b",
    )
    a.add_argument(
        "--key",
        action="store_true",
        help="key the backdrop out (implied by an alpha --format or --background)",
    )
    a.add_argument("--background", metavar="FILE", help="image (a slide) or video to put the presenter over")
    a.add_argument(
        "--presenter",
        default="1,1,0.8",
        metavar="X,Y,SCALE",
        help="presenter placement on --background: x and y 0..1 (1,1 = bottom right), scale = its height / the "
        "background's (1,1,0.8)",
    )
    a.add_argument("--matte", action="store_true", help="alpha formats: also write the alpha as a grey video")


def _input_arguments(p: argparse.ArgumentParser) -> None:
    io = p.add_argument_group("inputs and output")
    io.add_argument("--input_path", help="reference image (image-to-video) or video (dubbing)")
    io.add_argument("--audio_path", help="speech of person 1 (any audio file, or a video's soundtrack)")
    io.add_argument("--audio_path2", help="speech of person 2 (two-speaker video)")
    io.add_argument(
        "--audio_type",
        choices=("para", "add"),
        default="para",
        help="two speakers: para = tracks play together, add = person 1 then person 2",
    )
    io.add_argument(
        "--text", help="say this with Kokoro TTS instead of --audio_path; '(s1) ... (s2) ...' for a dialogue"
    )
    io.add_argument(
        "--script",
        help="a script of several segments (JSON or plain text, see README 'Scripts'): one video, one "
        "identity, the prompt switched per segment; captions across the whole script with --subtitles",
    )
    for flag, speaker in (("--voice", 1), ("--voice2", 2)):
        voice = DEFAULT_VOICES[speaker]
        io.add_argument(flag, default=voice, help=f"Kokoro voice of person {speaker} (default {voice})")
    io.add_argument("--lang", default=None, help="Kokoro language code (default: the voice's language)")
    io.add_argument(
        "--input_json", help="the reference's input JSON (prompt, cond_video, cond_audio, audio_type, bbox)"
    )
    io.add_argument("--output_path", help="output mp4 (default infinitetalk.mp4)")
    io.add_argument("--save_file", help="output path without .mp4 (the reference's flag)")
    io.add_argument("--subtitles", action="store_true", help="add TTS captions as a subtitle track")
    io.add_argument(
        "--bbox",
        action="append",
        default=[],
        help="person box 'x_min,y_min,x_max,y_max' in input-image pixels (x = column); give twice "
        "(person 1, person 2) or once as 'box1;box2'. Default: found from the two faces (person 1 = left), "
        "the left/right halves when no face is found",
    )
    io.add_argument(
        "--resume", action="store_true", help="continue an interrupted run (same inputs and options)"
    )
    io.add_argument(
        "--face_only",
        action="store_true",
        help="video-to-video: keep every source pixel outside a feathered region around the (tracked) face",
    )
    io.add_argument(
        "--segments_dir", help="where per-window segments and resume state go (default OUTPUT.parts/)"
    )
    io.add_argument("--keep_segments", action="store_true", help="keep the segments folder after muxing")
    io.add_argument(
        "--crf", type=int, default=18, help="H.264 quality of the segments (0 lossless .. 51; 18)"
    )


def _output_arguments(p: argparse.ArgumentParser) -> None:
    out = p.add_argument_group("output file")
    out.add_argument(
        "--format",
        choices=("h264-mp4", "prores-mov", "ffv1-mkv", "png-wav", *ALPHA_FORMATS),
        default="h264-mp4",
        help="h264-mp4: H.264 + AAC (default); prores-mov: ProRes 422 HQ + 24-bit PCM; ffv1-mkv: lossless "
        "RGB + 24-bit PCM; png-wav: a folder of PNG frames + soundtrack.wav (the output suffix follows). "
        "With alpha (straight; the frames are keyed): prores4444-mov, webm-vp9 (+ Opus), ffv1-rgba-mkv, png-rgba",
    )
    out.add_argument("--preset", default="medium", help="x264 preset for h264-mp4 (ultrafast .. veryslow)")
    out.add_argument(
        "--loudness",
        type=float,
        default=None,
        metavar="LUFS",
        help="deliver the soundtrack at this integrated loudness (e.g. -16 web, -23 EBU R128); "
        "default: the audio's own level, untouched",
    )
    out.add_argument(
        "--true_peak", type=float, default=-1.0, metavar="DBTP", help="true-peak ceiling with --loudness (-1)"
    )
    out.add_argument(
        "--no_live",
        action="store_true",
        help="do not keep the live playlist OUTPUT.parts/live/live.m3u8 (watch the video while it is made)",
    )


def _weight_arguments(p: argparse.ArgumentParser) -> None:
    w = p.add_argument_group("weights")
    w.add_argument(
        "--weights",
        help="ComfyUI folder, its models/, or the official weights/ tree: every file is found by its content "
        "(subfolders too); see python -m infinitetalk.doctor",
    )
    w.add_argument(
        "--ckpt_dir", help="Wan2.1-I2V-14B-480P folder (overrides --weights for DiT, T5, CLIP, VAE)"
    )
    w.add_argument("--infinitetalk_dir", help="InfiniteTalk adapter file (single or multi)")
    w.add_argument("--wav2vec_dir", help="chinese-wav2vec2-base folder or file")
    w.add_argument(
        "--lora", action="append", default=[], metavar="PATH[:SCALE]", help="merge a LoRA (repeatable)"
    )
    w.add_argument("--lora_dir", nargs="+", default=[], help="LoRA files (the reference's flag)")
    w.add_argument(
        "--lora_scale", nargs="+", type=float, default=[], help="scales for --lora_dir (default 1.2 each)"
    )
    w.add_argument(
        "--quantization",
        choices=tuple(QUANTIZATIONS),
        default=None,
        help="DiT weights: none; fp8_e4m3fn = fp8 storage (block linears stored as float8, cast per layer); "
        "quanto_int8 / quanto_fp8 = optimum-quanto weight quantisation (default none)",
    )
    w.add_argument(
        "--quant",
        choices=("int8", "fp8"),
        help="the reference's flag: optimum-quanto int8 / fp8 (same as --quantization quanto_int8 / quanto_fp8)",
    )
    w.add_argument(
        "--block_swap",
        type=_block_swap,
        default=NO_SWAP,
        metavar="N|auto",
        help="keep N of the 40 DiT blocks in RAM and stream them to the GPU; auto: the fewest that fit (0)",
    )
    w.add_argument(
        "--attention",
        choices=BACKENDS,
        default="auto",
        help="attention kernel: auto (PyTorch SDPA), sdpa, flash (flash-attn), sage (SageAttention)",
    )
    w.add_argument(
        "--compile", action="store_true", help="torch.compile the DiT blocks (first window slower)"
    )
    w.add_argument(
        "--offload_model",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="keep models on the CPU and move each to the GPU only while it runs",
    )
    w.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    w.add_argument(
        "--dtype",
        choices=tuple(p for p in PRECISIONS if p != "auto"),
        default=None,
        help="compute dtype (bf16 on GPU, fp32 on CPU)",
    )


def _generation_arguments(p: argparse.ArgumentParser) -> None:
    """The generation knobs; their defaults are ``GenerationConfig``'s (the reference's)."""
    d = GenerationConfig()
    g = p.add_argument_group("generation")
    g.add_argument(
        "--prompt",
        default=None,
        help="what the video shows; lines starting with a time tag change it over time, e.g. "
        "'calm\\n[0:12] she smiles' (tags [m:ss], [m:ss.s], [h:mm:ss], [12s]; README 'Prompt schedules')",
    )
    g.add_argument(
        "--prompt_file", default=None, help="read --prompt (or a prompt schedule) from a text file"
    )
    g.add_argument("--n_prompt", default="", help="negative prompt (default: the reference's)")
    g.add_argument(
        "--mode",
        choices=("clip", "streaming"),
        default=d.mode,
        help=f"streaming: the whole audio; clip: one window of --frame_num frames ({d.mode})",
    )
    g.add_argument(
        "--size",
        default=d.size,
        help=f"infinitetalk-480, infinitetalk-720 or WxH, multiples of 16 ({d.size})",
    )
    g.add_argument(
        "--frame_num", type=int, default=d.frame_num, help=f"frames per window, 4n+1 ({d.frame_num})"
    )
    g.add_argument(
        "--motion_frame",
        type=int,
        default=d.motion_frame,
        help=f"frames carried between windows, 4n+1 ({d.motion_frame})",
    )
    g.add_argument(
        "--max_frame_num",
        type=int,
        default=d.max_frame_num,
        help="cap on the video length in frames (default none)",
    )
    g.add_argument("--sample_steps", type=int, default=d.steps)
    g.add_argument(
        "--sample_shift", type=float, default=d.shift, help="flow shift (default 7 at 480, 11 at 720)"
    )
    g.add_argument("--sample_text_guide_scale", type=float, default=d.text_scale)
    g.add_argument("--sample_audio_guide_scale", type=float, default=d.audio_scale)
    g.add_argument("--sampler", choices=SAMPLERS, default=d.sampler)
    g.add_argument(
        "--seed", "--base_seed", dest="seed", type=int, default=d.seed, help="random seed (-1: random)"
    )
    g.add_argument(
        "--color_correction_strength",
        type=float,
        default=d.color_correction_strength,
        help=f"0..1 ({d.color_correction_strength})",
    )
    g.add_argument("--use_apg", action="store_true", default=d.use_apg, help="adaptive projected guidance")
    g.add_argument("--apg_momentum", type=float, default=d.apg_momentum)
    g.add_argument("--apg_norm_threshold", type=float, default=d.apg_norm_threshold)
    g.add_argument("--use_teacache", action="store_true", default=d.use_teacache)
    g.add_argument("--teacache_thresh", type=float, default=d.teacache_thresh)
    g.add_argument(
        "--batch_guidance",
        action="store_true",
        default=d.batch_guidance,
        help="run guidance branches as one batch (more memory)",
    )
    dr = p.add_argument_group("drift over long runs (docs/TELEMETRY.md; every option off by default)")
    dr.add_argument(
        "--no_report",
        action="store_true",
        help="do not measure drift: by default OUTPUT.report.png / .json (and report.* in the run folder, "
        "redrawn after every window) chart colour, sharpness, face position, window joins and mouths in silence",
    )
    dr.add_argument(
        "--silence_noise_floor",
        type=float,
        default=None,
        metavar="DBFS",
        help="add white noise at this level (about -45) to the silences of the speech before wav2vec2, "
        "against mouths moving in silence (the soundtrack is untouched)",
    )
    dr.add_argument(
        "--latent_motion",
        action="store_true",
        help="carry the motion frames across window joins as latents instead of decoding and re-encoding "
        "them (one VAE encode less per window, no round-trip loss; approximate, see docs/TELEMETRY.md)",
    )
    dr.add_argument(
        "--color_anchor",
        type=float,
        default=0.0,
        metavar="DE",
        help="anchor the face and background colours to the reference, region by region, in windows whose "
        "colour drifts more than this many ΔE (about 4; 0 = off)",
    )


# ============================================================================ inputs
