"""Scripts of many segments: one generation, one identity, the prompt switched per segment.

A script lists segments, each with its text (spoken by Kokoro, Dia-style markup allowed) or a recording,
its prompt and its speaker. :func:`render_script` lays the segments end to end on one track per speaker
(the other speaker silent meanwhile, as in a dialogue), builds captions across the whole script and the
prompt schedule ``(first video frame, prompt)`` that the pipeline switches per window
(``InfiniteTalkPipeline.generate(prompts=...)``). The video is one generation: same reference image,
motion frames carried across segment boundaries, so the identity never resets.

Two file formats (``load_script``): JSON, or plain text. JSON::

    {"prompt": "A woman talks to the camera.", "voices": {"1": "af_heart", "2": "am_adam"}, "pause": 0.2,
     "segments": [{"text": "[S1] Hello! (laughs)", "prompt": "She smiles."},
                  {"audio": "answer.wav", "speaker": 2, "text": "caption of the recording"}]}

Plain text (one segment per line; ``#`` starts a comment; ``key: value`` lines set what follows)::

    prompt: A woman talks to the camera.       # the prompt of the segments below (until the next prompt:)
    voice 1: af_heart                          # voice of speaker 1 (voice 2: ... for speaker 2)
    pause: 0.2                                 # seconds of silence between segments
    [S1] Welcome back! (laughs) Today: scripts.
    [S2] audio: answer.wav | caption of the recording

Recordings are found relative to the script's folder (``load_script``) or the ``base_dir`` given to
``parse_script``. A script from an untrusted source (the Script node) is parsed with ``confine=True``: every
recording must then lie inside ``base_dir`` (the input folder) and every voice is a voice name of the Kokoro
model (no ``.pt`` path), checked by :mod:`infinitetalk.paths` before anything is opened. Caps (characters,
segments): :mod:`infinitetalk.validation`.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import paths
from .config import VIDEO_FPS
from .errors import InputError
from .media import load_audio, loudness_normalize, resample, to_mono
from .media.captions import Cue
from .tts.dialogue import speaker_tag
from .validation import MAX_SCRIPT_CHARS, MAX_SEGMENTS, MAX_TEXT_CHARS, check_text_length
from .weights import DEFAULT_VOICES

logger = logging.getLogger(__name__)

SAMPLE_RATE = 24000  # Kokoro's rate; recordings are resampled to it
_SPEAKER = re.compile(rf"^\s*{speaker_tag('[12]')}\s*", re.IGNORECASE)
_SPEAKER_ANY = re.compile(speaker_tag("2"), re.IGNORECASE)
_DIRECTIVE = re.compile(r"^(prompt|voice(?:\s*([12]))?|pause)\s*:\s*(.*)$", re.IGNORECASE)


@dataclass
class Segment:
    text: str = ""  # words to say, or the caption of a recording
    audio: str | None = None  # a recording instead of speech synthesis
    prompt: str | None = None  # None: the script's prompt
    speaker: int = 1

    @property
    def speakers(self) -> set[int]:
        return {2} if self.speaker == 2 or (self.audio is None and _SPEAKER_ANY.search(self.text)) else {1}


@dataclass
class Script:
    segments: list[Segment]
    prompt: str = ""
    voices: dict[int, str] = field(default_factory=dict)  # set by the script (else the caller's / defaults)
    pause_s: float = 0.0
    base_dir: Path = field(default_factory=Path)
    confined: bool = False  # recordings must lie inside base_dir (a script from a prompt)

    @property
    def num_speakers(self) -> int:
        return 2 if any(2 in s.speakers for s in self.segments) else 1

    @property
    def needs_tts(self) -> bool:
        return any(s.audio is None for s in self.segments)


@dataclass
class RenderedScript:
    tracks: list[np.ndarray]  # one float32 track per speaker, aligned, at sample_rate
    mix: np.ndarray
    sample_rate: int
    cues: list[Cue]  # captions across the whole script
    spans: list[tuple[float, float]]  # seconds, per segment
    prompts: list[tuple[int, str]]  # (first video frame, prompt), per segment

    @property
    def duration(self) -> float:
        return len(self.mix) / self.sample_rate


# ============================================================================ parsing
def load_script(path: str | Path) -> Script:
    """A script file: JSON (``.json`` or text starting with ``{``) or the plain-text format."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"script '{path}' cannot be read ({err}): check the path") from err
    return parse_script(text, path.parent, name=str(path))


def parse_script(
    text: str, base_dir: str | Path = ".", name: str = "script", confine: bool = False
) -> Script:
    """A script from its text. ``confine``: recordings must lie inside ``base_dir`` and voices are names
    (the script came from a prompt, not from the machine's user); refused here, before anything is read."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{name} is empty: write one segment per line, e.g. '[S1] Hello there.'")
    check_text_length(text, MAX_SCRIPT_CHARS, name=name, what="script")
    script = _parse_json(text, name) if text.lstrip().startswith("{") else _parse_text(text, name)
    script.base_dir, script.confined = Path(base_dir), confine
    if not script.segments:
        raise InputError(f"{name} has no segments: add lines to say (or 'audio: file.wav')")
    if len(script.segments) > MAX_SEGMENTS:
        raise InputError(
            f"{name} has {len(script.segments):,} segments, more than the {MAX_SEGMENTS:,} allowed: "
            "split it into several scripts"
        )
    if not 0 <= script.pause_s <= 10:
        raise InputError(f"{name}: pause {script.pause_s} must be between 0 and 10 seconds")
    for i, seg in enumerate(script.segments, 1):
        check_text_length(seg.text, MAX_TEXT_CHARS, name=f"{name} segment {i}", what="segment")
        if seg.audio is not None and confine:
            paths.check_name(seg.audio, what=f"{name} segment {i} audio")
    if confine:
        for speaker, voice in script.voices.items():
            for part in str(voice).split(","):
                check_voice_name(part.strip(), what=f"{name} voice {speaker}")
    return script


def check_voice_name(voice: str, *, what: str) -> None:
    """A Kokoro voice given by name only (``af_heart``), not a path to a ``.pt`` file."""
    parts = paths.check_name(voice, what=what)
    if len(parts) != 1 or voice.endswith(".pt"):
        raise InputError(f"{what} '{voice}' is a file path: give a voice name such as 'af_heart'")


def _parse_json(text: str, name: str) -> Script:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{name} is not valid JSON ({err}): fix it or use the plain-text format") from err
    if not isinstance(data, dict) or not isinstance(data.get("segments"), list):
        raise InputError(
            f'{name}: expected an object with a \'segments\' list, e.g. {{"segments": [{{"text": "Hi"}}]}}'
        )
    try:
        voices = {int(k): str(v) for k, v in (data.get("voices") or {}).items()}
    except (AttributeError, TypeError, ValueError) as err:
        raise InputError(
            f'{name}: \'voices\' must map speaker numbers to voices, e.g. {{"1": "af_heart"}}'
        ) from err
    if not set(voices) <= {1, 2}:
        raise InputError(f"{name}: 'voices' names speakers {sorted(voices)}: scripts have speakers 1 and 2")
    segments = []
    for i, item in enumerate(data["segments"]):
        if not isinstance(item, dict) or not (item.get("text") or item.get("audio")):
            raise InputError(f"{name}: segment {i + 1} needs 'text' or 'audio'")
        speaker = item.get("speaker", 1)
        if speaker not in (1, 2) or isinstance(speaker, bool):
            raise InputError(f"{name}: segment {i + 1} has speaker {speaker}: use 1 or 2")
        audio, prompt = item.get("audio"), item.get("prompt")
        if not isinstance(audio, (str, type(None))) or not isinstance(prompt, (str, type(None))):
            raise InputError(f"{name}: segment {i + 1}: 'audio' and 'prompt' must be text")
        segments.append(Segment(str(item.get("text", "")), audio, prompt, int(speaker)))
    return Script(segments, str(data.get("prompt", "")), voices, float(data.get("pause", 0.0)))


def _parse_text(text: str, name: str) -> Script:
    script = Script([])
    prompt = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        directive = _DIRECTIVE.match(line)
        if directive:
            key, which, value = directive.group(1).lower(), directive.group(2), directive.group(3).strip()
            if key == "prompt":
                prompt = value
                script.prompt = script.prompt or value
            elif key.startswith("voice"):
                script.voices[int(which or 1)] = value
            else:
                script.pause_s = _number(value, name, number)
            continue
        script.segments.append(_segment_line(line, prompt))
    return script


def _number(value: str, name: str, line: int) -> float:
    try:
        return float(value)
    except ValueError as err:
        raise InputError(f"{name} line {line}: 'pause: {value}' is not a number of seconds") from err


def _segment_line(line: str, prompt: str | None) -> Segment:
    m = _SPEAKER.match(line)
    speaker = int(m.group("speaker")) if m else 1
    rest = line[m.end() :] if m else line
    if rest.lower().startswith("audio:"):
        path, _, caption = rest[6:].partition("|")
        return Segment(caption.strip(), path.strip(), prompt, speaker)
    return Segment(line, None, prompt, speaker)


# ============================================================================ rendering
def render_script(
    script: Script,
    tts=None,
    speed: float = 1.0,
    lang: str | None = None,
    seed: int = 0,
    voices: dict[int, str] | None = None,
) -> RenderedScript:
    """Speak / load every segment and lay them end to end (``script.pause_s`` apart) on per-speaker tracks.

    ``tts``: a :class:`infinitetalk.tts.KokoroTTS` (needed when a segment has text and no recording).
    Recordings are resampled to 24 kHz and loudness-normalised to -23 LUFS, like the reference's input audio.
    Voices: the script's own ``voice`` lines win over ``voices``, which win over ``DEFAULT_VOICES``.
    """
    voices = {**DEFAULT_VOICES, **(voices or {}), **script.voices}
    if script.needs_tts and tts is None:
        raise InputError("the script has text segments: load Kokoro (TTS) or give every segment a recording")
    n_speakers = script.num_speakers
    gap = round(script.pause_s * SAMPLE_RATE)
    tracks: list[list[np.ndarray]] = [[] for _ in range(n_speakers)]
    cues: list[Cue] = []
    spans, prompts, pos = [], [], 0
    for i, seg in enumerate(script.segments):
        if i and gap:
            for t in tracks:
                t.append(np.zeros(gap, np.float32))
            pos += gap
        parts, seg_cues = _render_segment(
            seg, script.base_dir, voices, tts, n_speakers, (speed, lang, seed), script.confined
        )
        start = pos / SAMPLE_RATE
        for t, part in zip(tracks, parts, strict=True):
            t.append(part)
        cues += [_shifted(c, start, n_speakers) for c in seg_cues]
        pos += len(parts[0])
        spans.append((start, pos / SAMPLE_RATE))
        prompts.append(((pos - len(parts[0])) * VIDEO_FPS // SAMPLE_RATE, seg.prompt or script.prompt))
        logger.info(
            "script segment %d: %.2f-%.2f s, prompt: %s", i + 1, start, pos / SAMPLE_RATE, prompts[-1][1]
        )
    joined = [np.concatenate(t).astype(np.float32) for t in tracks]
    return RenderedScript(
        joined, np.sum(joined, axis=0).astype(np.float32), SAMPLE_RATE, cues, spans, prompts
    )


def _recording_path(name: str, base_dir: Path, confined: bool) -> Path:
    if confined:  # from a prompt: inside base_dir (the input folder) or refused
        return paths.join(base_dir, name, what="script audio")
    return Path(name) if Path(name).is_absolute() else base_dir / name


def _render_segment(
    seg: Segment, base_dir: Path, voices: dict[int, str], tts, n_speakers: int, say, confined: bool = False
):
    """(per-speaker arrays of one length, cues relative to the segment start)."""
    if seg.audio is not None:
        wave = _recording(_recording_path(seg.audio, base_dir, confined))
        parts = [wave if s == seg.speaker else np.zeros_like(wave) for s in range(1, n_speakers + 1)]
        cue = [_Speaking(0.0, len(wave) / SAMPLE_RATE, seg.text, seg.speaker)] if seg.text.strip() else []
        return parts, cue
    speed, lang, seed = say
    text = seg.text if _SPEAKER.match(seg.text) else f"[S{seg.speaker}] {seg.text}"
    used = {s: voices[s] for s in range(1, n_speakers + 1)}
    said = tts.speak_dialogue(text, used, speed=speed, lang=lang, seed=seed)
    if said.sample_rate != SAMPLE_RATE:
        raise InputError(f"TTS sample rate {said.sample_rate} Hz: expected {SAMPLE_RATE} Hz (Kokoro)")
    return said.tracks, [_Speaking(c.start, c.end, c.text, c.speaker) for c in said.cues]


@dataclass(frozen=True)
class _Speaking:
    start: float
    end: float
    text: str
    speaker: int


def _shifted(c: _Speaking, offset: float, n_speakers: int) -> Cue:
    text = f"S{c.speaker}: {c.text}" if n_speakers == 2 else c.text
    return Cue(c.start + offset, c.end + offset, text)


def _recording(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"script audio '{path}' does not exist: give the path relative to the script file")
    wave, sr = load_audio(path)
    return loudness_normalize(resample(to_mono(wave), sr, SAMPLE_RATE), SAMPLE_RATE).astype(np.float32)
