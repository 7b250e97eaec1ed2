"""InfiniteTalk Doctor: the weights report of ``python -m infinitetalk.doctor``, inside ComfyUI."""

from __future__ import annotations

import time

from . import _common as c
from ._api import io, ui


class Doctor(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfiniteTalkDoctor",
            display_name="InfiniteTalk Doctor",
            category=c.CATEGORY_LOADERS,
            description="Checks the InfiniteTalk weights in ComfyUI's model folders (extra_model_paths.yaml "
            "included) and the pack's weights/ folder, reading only file headers: which file each loader "
            "uses, layout, dtype and dimensions, what is missing (file, folder, source), files it could not "
            "place, whether the adapter fits the DiT and the wav2vec2, device and free VRAM/RAM. The last "
            "line says ready or not ready.",
            inputs=[
                io.Int.Input(
                    "speakers",
                    default=1,
                    min=1,
                    max=2,
                    tooltip="People in the video: 1 needs the single adapter (component adapter_single), "
                    "2 the multi adapter (adapter_multi).",
                )
            ],
            outputs=[io.String.Output(display_name="report", tooltip="The report as text.")],
            is_output_node=True,
        )

    @classmethod
    def fingerprint_inputs(cls, **kwargs) -> float:
        return time.time()  # files change outside ComfyUI: check again on every run

    @classmethod
    def execute(cls, speakers: int = 1) -> io.NodeOutput:
        from ..infinitetalk.doctor import diagnose

        text = diagnose(c.search_paths(), speakers=int(speakers)).text()
        return io.NodeOutput(text, ui=ui.PreviewText(text))


NODES = [Doctor]
