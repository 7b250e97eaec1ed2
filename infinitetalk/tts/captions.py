"""Caption cues from Kokoro token timestamps.

``KPipeline.join_timestamps`` gives every token of a chunk ``start_ts``/``end_ts`` in seconds
from the chunk start. Here tokens become word cues (punctuation joins the word before it),
shifted by the chunk's offset in the whole audio, and word cues are grouped into phrase
cues (cut after clause punctuation or before ``max_chars``), the usual caption unit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..media.captions import Cue

_CLAUSE_END = tuple(",.!?;:…—，、。！？；：")
OPENING_MARKS = frozenset("“‘「『《（(«[{¿¡")
_TIGHT = frozenset("“”‘’「」『』《》（）")  # marks set without spaces in CJK text


@dataclass(frozen=True)
class SpeakerCue(Cue):
    """A caption cue with the number of the speaker saying it (1, 2, ...)."""

    speaker: int = 1


def _has_speech(text: str) -> bool:
    return any(c.isalnum() for c in text)


def word_cues(tokens: Iterable, offset: float, duration: float) -> list[Cue]:
    """Cues of one chunk's timed tokens, shifted by ``offset`` and clipped to ``[0, duration]``.

    Closing punctuation joins the word before it; symbols written against the next word
    (an opening quote or bracket, the "$" of "$5") join that word. Untimed tokens that stand
    alone (nothing was pronounced) are left out.
    """
    cues: list[Cue] = []
    prefix, prefix_start, after_space = "", None, True
    for tk in tokens:
        text = tk.text.strip()
        timed = tk.start_ts is not None and tk.end_ts is not None
        if not text or (not timed and tk.whitespace):
            after_space = after_space if not text else True
            continue
        start = offset + min(max(tk.start_ts, 0.0), duration) if timed else None
        end = max(start, offset + min(tk.end_ts, duration)) if timed else None
        speech = _has_speech(text)
        opening = not speech and (set(text) <= OPENING_MARKS or (after_space and not tk.whitespace))
        if not timed or opening:  # belongs to the next word
            prefix, prefix_start = prefix + text, prefix_start if prefix_start is not None else start
        elif not speech:  # closing punctuation, or a spaced dash
            if cues:
                last = cues.pop()
                sep = " " if after_space else ""
                cues.append(Cue(last.start, max(last.end, end), f"{last.text}{sep}{text}"))
        else:
            start = start if prefix_start is None else prefix_start
            start = max(start, cues[-1].end) if cues else start
            cues.append(Cue(start, max(start, end), prefix + text))
            prefix, prefix_start = "", None
        after_space = bool(tk.whitespace)
    return cues


def phrase_cues(words: Sequence[Cue], max_chars: int = 42, min_chars: int = 12) -> list[Cue]:
    """Group word cues into caption lines: cut after clause punctuation once a line has
    ``min_chars`` (so "Dr." or "Yes." do not stand alone), and before passing ``max_chars``.
    Widths count a CJK character as two."""
    out: list[Cue] = []
    group: list[Cue] = []
    for w in words:
        text = _join([*group, w])
        if group and _width(text) > max_chars:
            out.append(_merge(group))
            group = []
        group.append(w)
        if w.text.endswith(_CLAUSE_END) and _width(_join(group)) >= min_chars:
            out.append(_merge(group))
            group = []
    if group:
        out.append(_merge(group))
    return out


def _join(words: Sequence[Cue]) -> str:
    text = ""
    for w in words:
        tight = text and (
            _is_cjk(text[-1]) or text[-1] in _TIGHT or _is_cjk(w.text[0]) or w.text[0] in _TIGHT
        )
        text = f"{text}{w.text}" if (not text or tight) else f"{text} {w.text}"
    return text


def _width(text: str) -> int:
    """Display width in Latin characters (a CJK character counts two)."""
    return sum(2 if _is_cjk(c) else 1 for c in text)


def _is_cjk(c: str) -> bool:
    return "\u3000" <= c <= "\u9fff" or "\uf900" <= c <= "\uffef"


def _merge(words: Sequence[Cue]) -> Cue:
    return Cue(words[0].start, words[-1].end, _join(words))


def shift(cues: Iterable[Cue], offset: float, speaker: int | None = None) -> list[Cue]:
    """Cues moved by ``offset`` seconds (and labelled with ``speaker`` when given)."""
    if speaker is None:
        return [Cue(c.start + offset, c.end + offset, c.text) for c in cues]
    return [SpeakerCue(c.start + offset, c.end + offset, c.text, speaker) for c in cues]
