"""Dialogue markup: ``(s1) Hello. (s2) Hi!`` or ``[S1] Hello. [S2] Hi!`` (case-insensitive, mixed).

Text before the first tag (or text without tags) belongs to speaker 1. Tags whose speaker has
no voice raise ``InputError`` naming the tag and the accepted ones.

Dia-style non-verbal tags (``(sighs)``, ``(laughs)``, ``(clears throat)``, ... see ``PAUSE_TAGS`` and
``DROPPED_TAGS``) are never spoken: breath-like ones become a pause of ``NONVERBAL_PAUSE_S`` seconds
before the speech that follows, the others are dropped; each gives a note (``parse_markup``).
Other parenthesised text, e.g. ``(see above)``, is read as written.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from dataclasses import dataclass

from ..errors import InputError, snippet

logger = logging.getLogger(__name__)


def speaker_tag(number: str = r"\d+") -> str:
    """The one grammar of a speaker tag, ``(s1)`` or ``[S1]`` (any case, spaces allowed inside, the brackets
    matched), as a regular expression for the speaker numbers that ``number`` (a regular expression)
    matches. Compile it with ``re.IGNORECASE``; the number is the group ``speaker``."""
    return rf"(?:(?P<round>\()|\[)\s*s\s*(?P<speaker>{number})\s*(?(round)\)|\])"


SPEAKER_TAG = re.compile(speaker_tag(), re.IGNORECASE)  # any speaker number
NONVERBAL_PAUSE_S = 0.4
# Dia's non-verbal tags (nari-labs/dia README) plus common variants. Kokoro cannot voice them.
PAUSE_TAGS = frozenset(
    {"sighs", "sigh", "inhales", "exhales", "breath", "breathes", "gasps", "sniffs", "pause", "clears throat"}
)
DROPPED_TAGS = frozenset(
    {
        "laughs", "laugh", "chuckle", "chuckles", "giggles", "coughs", "cough", "singing", "sings", "mumbles",
        "beep", "groans", "claps", "screams", "applause", "burps", "humming", "sneezes", "whistles", "cries",
    }
)  # fmt: skip
_NONVERBAL = re.compile(r"\(\s*([a-z][a-z ]{0,20}?)\s*\)", re.IGNORECASE)


@dataclass(frozen=True)
class Turn:
    speaker: int
    text: str
    pause_before: float = 0.0  # seconds of silence before the turn (from a non-verbal tag)


def accepted_tags(speakers: Collection[int]) -> str:
    return ", ".join(f"(s{n})/[S{n}]" for n in sorted(speakers))


def parse_dialogue(text: str, speakers: Collection[int] = (1, 2)) -> list[Turn]:
    """Split ``text`` into speaker turns (empty turns dropped; consecutive same-speaker turns kept).

    Non-verbal tags become pauses or are dropped (notes logged; :func:`parse_markup` returns them).
    """
    turns, notes = parse_markup(text, speakers)
    for note in notes:
        logger.info("TTS markup: %s", note)
    return turns


def parse_markup(text: str, speakers: Collection[int] = (1, 2)) -> tuple[list[Turn], list[str]]:
    """Speaker turns and the notes about non-verbal tags (what became a pause, what was dropped)."""
    raw = _speaker_turns(text, speakers)
    turns, notes, carry = [], [], 0.0
    for turn in raw:
        pieces, carry = split_nonverbal(turn.text, notes, carry)
        turns += [Turn(turn.speaker, piece, pause) for piece, pause in pieces]
    if not turns:
        raise InputError(f"TTS text has tags but nothing to say: '{text.strip()[:60]}'")
    return turns, notes


def split_nonverbal(text: str, notes: list[str], pause: float = 0.0) -> tuple[list[tuple[str, float]], float]:
    """``text`` cut at its non-verbal tags: ``([(piece, pause before it)], pause left after the last piece)``.

    ``pause`` is carried in from before the text; a note per tag is appended to ``notes``.
    """
    pieces, current, start = [], "", 0
    for m in _NONVERBAL.finditer(text):
        tag = " ".join(m.group(1).lower().split())
        if tag not in PAUSE_TAGS and tag not in DROPPED_TAGS:
            continue  # ordinary parenthesised text: spoken
        current += " " + text[start : m.start()]
        start = m.end()
        if tag in DROPPED_TAGS:
            notes.append(f"({tag}) dropped: Kokoro cannot voice it")
            continue
        notes.append(f"({tag}) -> {NONVERBAL_PAUSE_S:g} s pause")
        if current.split():
            pieces.append((" ".join(current.split()), pause))
            current, pause = "", 0.0
        pause += NONVERBAL_PAUSE_S
    current = " ".join((current + " " + text[start:]).split())
    if current:
        pieces.append((current, pause))
        pause = 0.0
    return pieces, pause


def _speaker_turns(text: str, speakers: Collection[int]) -> list[Turn]:
    if not isinstance(text, str) or not text.strip():
        raise InputError("TTS text is empty: write what to say, e.g. '(s1) Hello. (s2) Hi!'")
    turns: list[Turn] = []
    speaker, start = 1, 0
    for m in SPEAKER_TAG.finditer(text):
        _add(turns, speaker, text[start : m.start()])
        speaker = int(m.group("speaker"))
        if speaker not in speakers:
            raise InputError(
                f"dialogue tag '{m.group(0)}' names speaker {speaker}, which has no voice: "
                f"use {accepted_tags(speakers)}"
            )
        start = m.end()
    _add(turns, speaker, text[start:])
    if not turns:
        raise InputError(f"TTS text has speaker tags but nothing to say: '{snippet(text)}'")
    return turns


def _add(turns: list[Turn], speaker: int, text: str) -> None:
    text = " ".join(text.split())
    if text:
        turns.append(Turn(speaker, text))
