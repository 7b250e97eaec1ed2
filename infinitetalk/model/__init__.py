"""The Wan2.1 I2V DiT with the InfiniteTalk audio adapter."""

from .audio_proj import AudioProjModel, split_audio_windows
from .dit import WanInfiniteTalkDiT

__all__ = ["AudioProjModel", "WanInfiniteTalkDiT", "split_audio_windows"]
