"""Dialogue markup: ``(s1) Hello. (s2) Hi!`` or ``[S1] Hello. [S2] Hi!`` (case-insensitive, mixed).

Text before the first tag (or text without tags) belongs to speaker 1. Tags whose speaker has
no voice raise ``InputError`` naming the tag and the accepted ones.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from ..errors import InputError, snippet

_TAG = re.compile(r"\(\s*s\s*(\d+)\s*\)|\[\s*s\s*(\d+)\s*\]", re.IGNORECASE)


@dataclass(frozen=True)
class Turn:
    speaker: int
    text: str


def accepted_tags(speakers: Collection[int]) -> str:
    return ", ".join(f"(s{n})/[S{n}]" for n in sorted(speakers))


def parse_dialogue(text: str, speakers: Collection[int] = (1, 2)) -> list[Turn]:
    """Split ``text`` into speaker turns (empty turns dropped; consecutive same-speaker turns kept)."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("TTS text is empty: write what to say, e.g. '(s1) Hello. (s2) Hi!'")
    turns: list[Turn] = []
    speaker, start = 1, 0
    for m in _TAG.finditer(text):
        _add(turns, speaker, text[start : m.start()])
        speaker = int(m.group(1) or m.group(2))
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
