"""Exceptions raised by the library.

Every message is one line that names the file or input at fault, what was expected, and the fix.
"""

from __future__ import annotations


class InfiniteTalkError(Exception):
    """Base class for every error the library raises on purpose."""


class CheckpointError(InfiniteTalkError, ValueError):
    """A weight file is missing, unknown, truncated or does not fit the model."""


class InputError(InfiniteTalkError, ValueError):
    """A user input (image, audio, text, parameter) is unusable."""


class Interrupted(InfiniteTalkError):
    """Generation was cancelled through the pipeline's cancellation callback."""


def snippet(text: str, limit: int = 60) -> str:
    """User text shortened for a one-line message: whitespace (newlines included) collapsed, cut at ``limit``."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
