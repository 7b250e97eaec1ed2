"""ComfyUI nodes of ComfyUI-InfiniteTalk (V3 schema). Thin: validate, convert ComfyUI types, call the library."""

from __future__ import annotations

from . import _common
from ._api import ComfyExtension, io


class InfiniteTalkExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        from . import (
            _migrate,
            audio,
            checks,
            compositing,
            conditioning,
            doctor,
            loaders,
            report,
            sampler,
            script,
            tts,
            video,
        )

        _common.register_folders()
        _migrate.register()  # saved prompts of older node schemas are rewritten before validation
        return [
            *loaders.NODES,
            *doctor.NODES,
            *audio.NODES,
            *tts.NODES,
            *conditioning.NODES,
            *sampler.NODES,
            *video.NODES,
            *compositing.NODES,
            *report.NODES,
            *checks.NODES,
            *script.NODES,
        ]
