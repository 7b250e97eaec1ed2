"""Text conditioning: prompt and negative prompt through umT5."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from comfy_api.latest import io

from ..infinitetalk.pipeline import DEFAULT_NEGATIVE_PROMPT
from . import _common as c
from . import _models


@dataclass
class TextEmbeds:
    """umT5 token embeddings of the prompt and the negative prompt (trimmed to real tokens)."""

    positive: torch.Tensor  # (L_pos, text_dim)
    negative: torch.Tensor  # (L_neg, text_dim)


class TextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfiniteTalkTextEncode",
            display_name="InfiniteTalk Text Encode",
            category=c.CATEGORY_CONDITIONING,
            description="Encodes the scene description and the negative prompt with umT5-XXL. The prompt steers "
            "the look and the motion; the audio drives the lips.",
            inputs=[
                io.Custom("INFINITETALK_TEXT_ENCODER").Input(
                    "text_encoder", tooltip="From InfiniteTalk Text Encoder Loader."
                ),
                io.String.Input(
                    "prompt",
                    multiline=True,
                    default="A person is talking to the camera, natural head movement, clear face.",
                    tooltip="What the video shows (person, setting, camera, mood).",
                ),
                io.String.Input(
                    "negative_prompt",
                    multiline=True,
                    default=DEFAULT_NEGATIVE_PROMPT,
                    tooltip="What to avoid; used by the text-guidance pass (ignored when text scale is 1).",
                ),
            ],
            outputs=[
                io.Custom("INFINITETALK_TEXT_EMBEDS").Output(
                    display_name="text_embeds", tooltip="Prompt and negative prompt embeddings."
                )
            ],
        )

    @classmethod
    def execute(cls, text_encoder, prompt, negative_prompt) -> io.NodeOutput:
        _models.load(text_encoder)
        with torch.inference_mode():
            positive, negative = text_encoder.obj.encode([prompt, negative_prompt])  # (L_i, text_dim)
        return io.NodeOutput(TextEmbeds(positive=positive.float().cpu(), negative=negative.float().cpu()))


NODES = [TextEncode]
