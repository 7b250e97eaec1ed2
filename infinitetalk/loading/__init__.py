"""Checkpoint readers and model loaders.

- :func:`open_checkpoint`: lazy, safe reader over safetensors files, sharded folders and ``.pth``
  (prefix stripping, fp8 and fp8-scaled dequantisation, one-line :class:`CheckpointError`).
- :func:`load_dit`: Wan2.1 I2V DiT + InfiniteTalk adapter in every released layout;
  :func:`inspect_dit`: its config and sizes from the headers only.
"""

from .dit import dit_key_shapes, fit_audio_encoder, infer_dit_config, inspect_dit, load_dit
from .state_dict import CheckpointReader, open_checkpoint

__all__ = [
    "CheckpointReader",
    "dit_key_shapes",
    "fit_audio_encoder",
    "infer_dit_config",
    "inspect_dit",
    "load_dit",
    "open_checkpoint",
]
