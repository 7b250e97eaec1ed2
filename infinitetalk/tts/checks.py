"""Checks of a text-to-speech request that need no model: the text, the voices, the language.

They answer before Kokoro is loaded, one line naming the input and the fix (the command line and the
TTS nodes call them).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError, snippet
from ..validation import MAX_TEXT_CHARS, check_text_length
from .dialogue import SPEAKER_TAG, parse_dialogue
from .kokoro import list_voices
from .languages import resolve_lang


def check_tts_text(text: str, *, name: str = "text") -> None:
    """Text with something to say: not empty, not only speaker tags and symbols."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{name} is empty: write what to say, e.g. 'Hello!' or '(s1) Hello. (s2) Hi!'")
    check_text_length(text, MAX_TEXT_CHARS, name=name, what="text to speak")
    words = SPEAKER_TAG.sub(" ", text)
    if not any(ch.isalnum() for ch in words):
        raise InputError(
            f"{name} '{snippet(text)}' holds only markup and symbols: write words after the tags, "
            "e.g. '(s1) Hello. (s2) Hi!'"
        )


def check_tts_request(
    model_dir: str | os.PathLike,
    text: str,
    voices: dict[int, str],
    lang: str | None,
    *,
    voice_names: dict[int, str] | None = None,
    lang_name: str = "language",
    text_name: str = "text",
) -> None:
    """Everything about a TTS request that can be checked before Kokoro is loaded."""
    check_tts_text(text, name=text_name)
    available = list_voices(model_dir)
    for speaker, voice in voices.items():
        label = (voice_names or {}).get(speaker, f"voice_{speaker}")
        if not isinstance(voice, str) or not voice.strip():
            raise InputError(f"{label} is empty: choose one of {available}")
        for part in (v.strip() for v in voice.split(",")):
            if part not in available and not (part.endswith(".pt") and Path(part).is_file()):
                shown = ", ".join(available[:12]) + (", ..." if len(available) > 12 else "")
                raise InputError(
                    f"{label} '{part}' is not a Kokoro voice in '{Path(model_dir) / 'voices'}': use one of {shown}"
                )
        try:
            resolve_lang(lang, voice)
        except InputError as err:
            raise InputError(f"{lang_name}: {err}") from None
    if len(voices) > 1:
        parse_dialogue(text, sorted(voices))
