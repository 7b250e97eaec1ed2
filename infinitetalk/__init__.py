"""InfiniteTalk: audio-driven talking-head video generation in pure PyTorch.

This package never imports ComfyUI. See ``docs/ARCHITECTURE.md`` for the module map.
"""

from .config import DiTConfig
from .errors import CheckpointError, InfiniteTalkError, InputError, Interrupted

__all__ = ["CheckpointError", "DiTConfig", "InfiniteTalkError", "InputError", "Interrupted"]
__version__ = "0.1.0"
