"""Kokoro-82M text to speech from a local folder, offline.

The model folder is the Hugging Face ``hexgrad/Kokoro-82M`` repository (``config.json``,
``kokoro-v1_0.pth``, ``voices/*.pt``), or ComfyUI's ``models/kokoro/`` holding the same files.
The model runs through kokoro's own ``KModel``; chunking (at most 510 phonemes per chunk)
and token timestamps come from kokoro's ``KPipeline``. Grapheme-to-phoneme conversion is
done here (:mod:`.languages`) so that nothing is downloaded: ``KPipeline`` would fetch
spaCy's English model and voices from the Hub when they are missing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import numbers
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import paths
from ..errors import CheckpointError, InputError, snippet
from ..loading.state_dict import safe_torch_load
from ..media.captions import Cue, srt_format
from ..validation import MAX_SPEAKERS, MAX_TEXT_CHARS, check_text_length
from ..weights import DEFAULT_VOICES, KOKORO, KOKORO_MODEL_FILES
from .captions import SpeakerCue, phrase_cues, shift, word_cues
from .dialogue import Turn, parse_dialogue, split_nonverbal
from .languages import LANGUAGES, front_end, resolve_lang

logger = logging.getLogger(__name__)

SAMPLE_RATE = 24000
SUBMODULES = ("bert", "bert_encoder", "predictor", "text_encoder", "decoder")
CONFIG_KEYS = ("vocab", "n_token", "plbert", "hidden_dim", "style_dim", "n_layer", "istftnet")
SPEED_RANGE = (0.25, 4.0)
STYLE_ROWS = 510  # a voice holds one style row per phoneme count of a chunk (1..510)
MAX_VOICE_PACKS = 16  # voices (and mixes 'a,b') kept loaded: 0.5 MB each
_PUNCT_PHONEMES = frozenset(';:,.!?—…"()“”')


@dataclass
class Speech:
    """Mono speech: ``audio`` float32 ``(N,)`` at ``sample_rate``; phrase ``cues`` and ``words``."""

    audio: np.ndarray
    sample_rate: int
    cues: list[Cue]
    words: list[Cue] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate

    def srt(self, words: bool = False) -> str:
        return srt_format(self.words if words else self.cues)


@dataclass
class Dialogue:
    """Per-speaker tracks of equal length (each silent while another speaks) and their mix.

    ``tracks[k]`` belongs to speaker ``speakers[k]``; ``cues``/``words`` are ``SpeakerCue``s;
    ``turns`` holds one ``SpeakerCue`` per turn (its span and text).
    """

    tracks: list[np.ndarray]
    mix: np.ndarray
    sample_rate: int
    cues: list[SpeakerCue]
    words: list[SpeakerCue]
    turns: list[SpeakerCue]
    speakers: list[int]

    @property
    def duration(self) -> float:
        return len(self.mix) / self.sample_rate

    def srt(self, words: bool = False, labels: Mapping[int, str] | None = None) -> str:
        """SRT text; each cue starts with its speaker's label (``S1: ...``), or none if labels={}."""
        names = {s: f"S{s}" for s in self.speakers} if labels is None else dict(labels)
        cues = self.words if words else self.cues
        return srt_format(
            [
                Cue(c.start, c.end, f"{names[c.speaker]}: {c.text}" if c.speaker in names else c.text)
                for c in cues
            ]
        )


# -- model folder -----------------------------------------------------------------------------------
def find_model_dir(path: str | Path) -> Path:
    """The folder holding ``config.json``: ``path`` itself, or its ``kokoro``/``Kokoro-82M`` child."""
    path = Path(path).expanduser()
    if path.is_file():
        path = path.parent
    for candidate in (path, path / "kokoro", path / "Kokoro-82M"):
        if (candidate / "config.json").is_file():
            return candidate
    raise CheckpointError(
        f"no Kokoro model in '{path}': expected config.json, kokoro-v1_0.pth and voices/*.pt "
        f"(download them from Hugging Face '{KOKORO}' into ComfyUI/models/kokoro/)"
    )


def list_voices(model_dir: str | Path) -> list[str]:
    """Voice names (``voices/<name>.pt``) of a Kokoro model folder, sorted."""
    voices = find_model_dir(model_dir) / "voices"
    return sorted(p.stem for p in voices.glob("*.pt")) if voices.is_dir() else []


def _model_file(model_dir: Path) -> Path:
    for name in KOKORO_MODEL_FILES:
        if (model_dir / name).is_file():
            return model_dir / name
    others = sorted(model_dir.glob("*.pth"))
    if len(others) == 1:
        return others[0]
    raise CheckpointError(
        f"no Kokoro weights in '{model_dir}': expected one of {list(KOKORO_MODEL_FILES)} "
        f"(found {[p.name for p in others]}); download kokoro-v1_0.pth from Hugging Face '{KOKORO}'"
    )


def _read_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"cannot read Kokoro config '{path}': {exc}; re-download it from '{KOKORO}'"
        ) from exc
    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        raise CheckpointError(
            f"Kokoro config '{path}' lacks {missing}: expected the config.json of '{KOKORO}'"
        )
    return config


def _load_model(config: dict, weights: Path, device: str | torch.device):
    from kokoro import KModel

    repo_id = KOKORO_MODEL_FILES.get(weights.name, KOKORO)
    try:
        model = KModel(repo_id=repo_id, config=config, model=str(weights))
    except Exception as exc:  # torch/pickle/shape errors: all mean the file does not fit
        raise CheckpointError(
            f"cannot load Kokoro weights '{weights}' with its config.json: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}; re-download the files from '{repo_id}'"
        ) from exc
    _check_weights(model, weights)
    return model.to(device).eval()


def _check_weights(model: torch.nn.Module, weights: Path) -> None:
    """KModel loads leniently (``strict=False``); refuse a file that leaves parameters unset."""
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # a legacy (non-zip) torch file cannot be memory-mapped
        state = torch.load(weights, map_location="cpu", weights_only=True)
    for name in SUBMODULES:
        have = {k.removeprefix("module.") for k in state.get(name, {})}
        missing = [k for k, _ in getattr(model, name).named_parameters() if k not in have]
        if missing:
            raise CheckpointError(
                f"Kokoro weights '{weights}' miss {len(missing)} '{name}' tensors (e.g. {missing[0]}): "
                f"the file is truncated or not a Kokoro-82M checkpoint; re-download it from '{KOKORO}'"
            )


def _token_pipeline(model, repo_id: str):
    """kokoro's ``KPipeline`` used only for chunking, inference and timestamps (no G2P, no Hub)."""
    from kokoro import KPipeline

    class TokenPipeline(KPipeline):
        def __init__(self) -> None:  # KPipeline's __init__ builds a G2P that may download
            self.repo_id, self.lang_code, self.model, self.voices, self.g2p = repo_id, None, model, {}, None

    return TokenPipeline()


# -- the engine ---------------------------------------------------------------------------------------
class KokoroTTS:
    """Kokoro-82M speech synthesis from a local model folder; never downloads."""

    def __init__(
        self, model_dir: str | Path, device: str | torch.device = "cpu", voice_files: bool = True
    ) -> None:
        """``voice_files``: a voice may also be a path to a ``.pt`` file (the command line). Hosts that take
        voices from untrusted prompts pass False: a voice is then a name in the model's ``voices/`` folder."""
        self.voice_files = voice_files
        self.model_dir = find_model_dir(model_dir)
        weights = _model_file(self.model_dir)
        self.config = _read_config(self.model_dir)
        self.model = _load_model(self.config, weights, device)
        self.voices = list_voices(self.model_dir)
        if not self.voices:
            raise CheckpointError(
                f"no voices in '{self.model_dir / 'voices'}': download voices/*.pt from '{KOKORO}'"
            )
        self._zh_version = "1.1" if "v1_1" in weights.name else None
        self._pipeline = _token_pipeline(self.model, KOKORO_MODEL_FILES.get(weights.name, KOKORO))
        self._front_ends: dict[str, Callable[[str], list]] = {}
        self._packs: dict[str, torch.Tensor] = {}  # voice -> style pack; at most MAX_VOICE_PACKS kept

    # -- public API
    def speak(
        self, text: str, voice: str, speed: float = 1.0, lang: str | None = None, seed: int = 0
    ) -> Speech:
        """Say ``text`` with ``voice`` (``lang`` defaults to the voice's language).

        Kokoro's vocoder draws noise; ``seed`` fixes it so the same inputs give the same samples
        (the host's global RNG state is left untouched).
        """
        if not isinstance(text, str) or not text.strip():
            raise InputError("TTS text is empty: write what to say")
        check_text_length(text, MAX_TEXT_CHARS, name="TTS text", what="text to speak")
        notes: list[str] = []
        pieces, _ = split_nonverbal(text, notes)  # Dia-style (sighs), (laughs): pauses or dropped
        for note in notes:
            logger.info("TTS markup: %s", note)
        if not pieces:
            raise InputError(f"TTS text '{text.strip()[:60]}' holds only non-verbal tags: write words to say")
        with self._seeded(seed):
            if len(pieces) == 1 and not pieces[0][1]:
                audio, words = self._synthesise(text, voice, speed, lang)
            else:
                audio, words = self._say_pieces(pieces, voice, speed, lang)
        return Speech(audio=audio, sample_rate=SAMPLE_RATE, cues=phrase_cues(words), words=words)

    def _say_pieces(self, pieces, voice, speed, lang) -> tuple[np.ndarray, list[Cue]]:
        """Pieces of text with silences before them, end to end, word cues shifted to their place."""
        audio: list[np.ndarray] = []
        words: list[Cue] = []
        offset = 0
        for text, pause in pieces:
            silence = np.zeros(round(pause * SAMPLE_RATE), np.float32)
            wave, piece_words = self._synthesise(text, voice, speed, lang)
            offset += len(silence)
            words += shift(piece_words, offset / SAMPLE_RATE)
            audio += [silence, wave]
            offset += len(wave)
        return np.concatenate(audio), words

    def speak_dialogue(
        self,
        text: str,
        voices: Mapping[int, str],
        speed: float = 1.0,
        lang: str | None = None,
        pause_s: float = 0.0,
        seed: int = 0,
    ) -> Dialogue:
        """Say a ``(s1) … (s2) …`` / ``[S1] … [S2] …`` dialogue; one aligned track per speaker."""
        speakers = _check_speakers(voices)
        if not (isinstance(pause_s, numbers.Real) and 0.0 <= pause_s <= 10.0):
            raise InputError(f"pause_s={pause_s!r}: expected seconds of silence between turns in [0, 10]")
        check_text_length(text, MAX_TEXT_CHARS, name="TTS text", what="text to speak")
        turns = parse_dialogue(text, speakers)
        for voice in voices.values():
            self._voice(voice)  # every voice checked before any synthesis
        with self._seeded(seed):
            said = [self._synthesise(t.text, voices[t.speaker], speed, lang) for t in turns]
        return _assemble(turns, said, speakers, round(pause_s * SAMPLE_RATE))

    def language_of(self, voice: str, lang: str | None = None) -> str:
        """The kokoro language code used for ``voice`` (and an optional explicit ``lang``)."""
        return resolve_lang(lang, voice)

    # -- steps
    @contextlib.contextmanager
    def _seeded(self, seed: int):
        device = next(self.model.parameters()).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(seed))
            yield

    def _synthesise(
        self, text: str, voice: str, speed: float, lang: str | None
    ) -> tuple[np.ndarray, list[Cue]]:
        _check_speed(speed)
        pack = self._voice(voice)
        tokens_of = self._front_end(resolve_lang(lang, voice))
        pieces: list[np.ndarray] = []
        words: list[Cue] = []
        offset = 0.0
        for paragraph in re.split(r"\n+", text.strip()):
            tokens = tokens_of(paragraph) if paragraph.strip() else []
            if not any(_pronounceable(t.phonemes) for t in tokens):
                continue  # only punctuation or symbols: nothing to say
            for result in self._pipeline.generate_from_tokens(tokens, voice=pack, speed=speed):
                audio = result.audio.float().cpu().numpy().reshape(-1)  # (N,)
                words += word_cues(result.tokens or [], offset, len(audio) / SAMPLE_RATE)
                pieces.append(audio)
                offset += len(audio) / SAMPLE_RATE
        if not pieces:
            raise InputError(
                f"TTS text '{snippet(text)}' has nothing to pronounce: write words, not only symbols"
            )
        return np.concatenate(pieces).astype(np.float32), words

    def _front_end(self, code: str) -> Callable[[str], list]:
        if code not in self._front_ends:
            logger.info("loading %s text front end", LANGUAGES[code].name)
            self._front_ends[code] = front_end(code, self.model.vocab, self._zh_version)
        return self._front_ends[code]

    def _voice(self, voice: str) -> torch.Tensor:
        """Style pack ``(510, 1, 256)`` float32 of a voice name, a ``.pt`` path, or 'a,b' (mean)."""
        if not isinstance(voice, str) or not voice.strip():
            raise InputError(f"TTS voice is empty: choose one of {self.voices}")
        if voice not in self._packs:
            packs = [self._load_pack(v.strip()) for v in voice.split(",")]
            if len(self._packs) >= MAX_VOICE_PACKS:  # keyed by prompt text (mixes): bounded
                self._packs.pop(next(iter(self._packs)))
            self._packs[voice] = torch.stack(packs).mean(0) if len(packs) > 1 else packs[0]
        return self._packs[voice]

    def _voice_path(self, name: str) -> Path:
        if name.endswith(".pt") and self.voice_files:
            return Path(name)  # the command line's user may name any file
        voices = self.model_dir / "voices"
        if name.endswith(".pt"):
            name = name[:-3]
        # the path boundary: a name, inside voices/ (no '..', no absolute path, no drive)
        return paths.resolve(f"{name}.pt", [voices], what="TTS voice", kind="Kokoro voices", must_exist=False)

    def _load_pack(self, name: str) -> torch.Tensor:
        path = self._voice_path(name)
        if not path.is_file():
            raise InputError(
                f"unknown Kokoro voice '{name}': available in {self.model_dir / 'voices'}: {self.voices}"
            )
        pack = safe_torch_load(path, mmap=False)
        if (
            not isinstance(pack, torch.Tensor)
            or pack.ndim != 3
            or pack.shape[1:] != (1, 2 * self.config["style_dim"])
            or pack.shape[0] < STYLE_ROWS
        ):
            shape = tuple(pack.shape) if isinstance(pack, torch.Tensor) else type(pack).__name__
            raise CheckpointError(f"voice file '{path}' holds {shape}: expected a (510, 1, 256) style tensor")
        return pack.float()


def _pronounceable(phonemes: str | None) -> bool:
    return any(not c.isspace() and c not in _PUNCT_PHONEMES for c in phonemes or "")


def _check_speed(speed: float) -> None:
    lo, hi = SPEED_RANGE
    if not isinstance(speed, numbers.Real) or not math.isfinite(speed) or not lo <= speed <= hi:
        raise InputError(f"TTS speed={speed!r}: expected a number in [{lo}, {hi}] (1.0 is normal)")


def _check_speakers(voices: Mapping[int, str]) -> list[int]:
    if (
        not isinstance(voices, Mapping)
        or 1 not in voices
        or not all(isinstance(k, int) and 0 < k <= MAX_SPEAKERS for k in voices)
    ):
        raise InputError(
            f"dialogue voices={voices!r}: expected e.g. {DEFAULT_VOICES} (speaker number -> voice)"
        )
    return sorted(voices)


def _assemble(
    turns: list[Turn], said: list[tuple[np.ndarray, list[Cue]]], speakers: list[int], gap: int
) -> Dialogue:
    """Lay the turns end to end (``gap`` silent samples between them) on per-speaker tracks."""
    pauses = [round(t.pause_before * SAMPLE_RATE) for t in turns]  # from non-verbal tags
    total = sum(len(a) for a, _ in said) + gap * (len(said) - 1) + sum(pauses)
    tracks = {s: np.zeros(total, dtype=np.float32) for s in speakers}
    cues: list[SpeakerCue] = []
    words: list[SpeakerCue] = []
    spans: list[SpeakerCue] = []
    pos = 0
    for turn, (audio, turn_words), pause in zip(turns, said, pauses, strict=True):
        pos += pause
        tracks[turn.speaker][pos : pos + len(audio)] = audio
        t0 = pos / SAMPLE_RATE
        words += shift(turn_words, t0, turn.speaker)
        cues += shift(phrase_cues(turn_words), t0, turn.speaker)
        spans.append(SpeakerCue(t0, (pos + len(audio)) / SAMPLE_RATE, turn.text, turn.speaker))
        pos += len(audio) + gap
    ordered = [tracks[s] for s in speakers]
    mix = np.sum(ordered, axis=0).astype(np.float32)
    return Dialogue(ordered, mix, SAMPLE_RATE, cues, words, spans, list(speakers))
