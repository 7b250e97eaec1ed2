"""Prompt schedules: one prompt text whose lines starting with a time tag switch the prompt over time.

::

    a woman talks calmly to the camera
    [0:12] she smiles and laughs
    [1:05.5] she leans in, serious

Tags: ``[m:ss]``, ``[m:ss.s]``, ``[h:mm:ss]``, ``[h:mm:ss.s]``, ``[12s]``, ``[12.5s]``, at the start of a
line. Text before the first tag starts the video; lines without a tag continue the current prompt. A
prompt without any tag is one prompt, unchanged. Times become video frames at 25 fps; the pipeline then
gives each window the prompt active at the middle of the frames it adds (``window_prompts``).
"""

from __future__ import annotations

import math
import re

from .config import VIDEO_FPS
from .errors import InputError
from .validation import MAX_SCHEDULE_ENTRIES, MAX_TEXT_CHARS, check_text_length

# what looks like a time tag (digits, colons, dots, an optional 's'); "[close-up]" or "[S1]" is text
_TAG = re.compile(r"^\s*\[\s*([0-9][0-9:.\s]*s?)\s*\]", re.IGNORECASE)
_SECONDS = re.compile(r"^(\d+(?:\.\d+)?)\s*s$", re.IGNORECASE)
_CLOCK = re.compile(r"^(?:(\d+):([0-5]\d):|(\d+):)([0-5]\d(?:\.\d+)?)$")
MAX_SECONDS = 100 * 3600
FORMS = "[0:12], [0:12.5], [1:02:03], [12s] or [12.5s]"


def parse_prompt_schedule(text: str, name: str = "prompt") -> list[tuple[int, str]]:
    """``[(first video frame, prompt), ...]`` of a prompt text, frames increasing.

    No tag: ``[(0, text)]`` with ``text`` exactly as given. ``name`` is the input named in errors.
    """
    if not isinstance(text, str):
        raise InputError(f"{name} must be text, got {type(text).__name__}")
    check_text_length(text, MAX_TEXT_CHARS, name=name, what="prompt")
    if not any(_TAG.match(line) for line in text.splitlines()):
        return [(0, text)]
    entries: list[tuple[int, int, list[str]]] = []  # (frame, line number, lines)
    for number, line in enumerate(text.splitlines(), 1):
        tag = _TAG.match(line)
        if tag is None:
            if entries or line.strip():
                if not entries:
                    entries.append((0, number, []))
                entries[-1][2].append(line)
            continue
        frame = math.floor(_seconds(tag.group(1), name, number) * VIDEO_FPS + 1e-6)  # the frame shown then
        if entries and frame <= entries[-1][0]:
            raise InputError(
                f"{name} line {number}: [{tag.group(1).strip()}] is not after the prompt before it "
                f"(line {entries[-1][1]}, {format_time(entries[-1][0])}): times must increase down the text, "
                "at least one frame (0.04 s) apart"
            )
        entries.append((frame, number, [line[tag.end() :]]))
        if len(entries) > MAX_SCHEDULE_ENTRIES:
            raise InputError(
                f"{name} line {number}: more than {MAX_SCHEDULE_ENTRIES} timed prompts: merge some "
                "(each window takes one prompt)"
            )
    schedule = []
    for frame, number, lines in entries:
        prompt = "\n".join(lines).strip()
        if not prompt:
            raise InputError(
                f"{name} line {number}: the prompt at {format_time(frame)} has no text: "
                "write what the video shows after the tag, or delete the tag"
            )
        schedule.append((frame, prompt))
    return schedule


def _seconds(tag: str, name: str, line: int) -> float:
    tag = re.sub(r"\s+", "", tag)
    seconds = None
    if m := _SECONDS.match(tag):
        seconds = float(m.group(1))
    elif m := _CLOCK.match(tag):
        hours, minutes = (m.group(1), m.group(2)) if m.group(1) is not None else ("0", m.group(3))
        seconds = int(hours) * 3600 + int(minutes) * 60 + float(m.group(4))
    if seconds is None:
        raise InputError(f"{name} line {line}: [{tag}] is not a time: write {FORMS} (seconds below 60)")
    if seconds > MAX_SECONDS:
        raise InputError(f"{name} line {line}: [{tag}] is more than 100 hours: give a time within the video")
    return seconds


def format_time(frame: int) -> str:
    """A video frame as ``m:ss.ss`` (25 fps)."""
    minutes, seconds = divmod(frame / VIDEO_FPS, 60)
    return f"{int(minutes)}:{seconds:05.2f}"


def unused_prompts(prompts: list[tuple[int, str]], window_prompts: list[str], num_frames: int) -> list[str]:
    """One line per scheduled prompt that no window will use, saying why (for a warning)."""
    lines = []
    for start, prompt in sorted(prompts):
        short = prompt if len(prompt) <= 40 else prompt[:37] + "..."
        if start >= num_frames:
            lines.append(
                f"'{short}' at {format_time(start)} starts after the audio ends "
                f"({format_time(num_frames)}): it never runs"
            )
        elif prompt not in window_prompts:
            lines.append(
                f"'{short}' at {format_time(start)} is used by no window (each window takes the prompt "
                "active at the middle of its new frames): give it more time"
            )
    return lines
