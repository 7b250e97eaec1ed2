"""Text conditioning: prompt (or a prompt schedule) and negative prompt through umT5."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..infinitetalk.pipeline import DEFAULT_NEGATIVE_PROMPT
from . import _common as c
from . import _core, _models
from ._api import io


@dataclass
class TextEmbeds:
    """umT5 token embeddings of the prompt and the negative prompt (trimmed to real tokens)."""

    positive: torch.Tensor  # (L_pos, text_dim)
    negative: torch.Tensor  # (L_neg, text_dim)


@dataclass
class ScheduledTextEmbeds(TextEmbeds):
    """Text embeddings with a prompt schedule: the Sampler switches the prompt per window."""

    schedule: list[tuple[int, str]] = field(default_factory=list)  # (first video frame, prompt)
    by_prompt: dict[str, torch.Tensor] = field(default_factory=dict)


class TextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfiniteTalkTextEncode",
            display_name="InfiniteTalk Text Encode",
            category=c.CATEGORY_CONDITIONING,
            description="Encodes the scene description and the negative prompt with umT5-XXL (the pack's loader or "
            "ComfyUI's Load CLIP, type wan). The prompt steers "
            "the look and the motion; the audio drives the lips.",
            inputs=[
                io.MultiType.Input(
                    "text_encoder",
                    types=[io.Custom("INFINITETALK_TEXT_ENCODER"), io.Custom(_core.CLIP)],
                    tooltip="From InfiniteTalk Text Encoder Loader, or ComfyUI's Load CLIP (type wan) with umT5 "
                    "(also a GGUF umT5 through ComfyUI-GGUF's CLIP loader): the same embeddings, trimmed to the "
                    "real tokens as the reference does.",
                ),
                io.String.Input(
                    "prompt",
                    multiline=True,
                    default="A person is talking to the camera, natural head movement, clear face.",
                    tooltip="What the video shows (person, setting, camera, mood). To change it over time, "
                    "start a line with a time tag: '[0:12] she smiles' (also [1:05.5], [1:02:03], [12s], "
                    "[12.5s]); text before the first tag opens the video, untagged lines continue a prompt. "
                    "README, 'Prompt schedules'.",
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
        from ..infinitetalk.prompts import parse_prompt_schedule

        text_encoder = _core.pack_text_encoder(text_encoder)
        schedule = parse_prompt_schedule(prompt)
        if len(schedule) > 1:
            return io.NodeOutput(encode_schedule(text_encoder, schedule, negative_prompt))
        _models.load(text_encoder)
        with torch.inference_mode():
            positive, negative = text_encoder.obj.encode([schedule[0][1], negative_prompt])  # (L_i, text_dim)
        return io.NodeOutput(TextEmbeds(positive=positive.float().cpu(), negative=negative.float().cpu()))


def encode_schedule(
    text_encoder, schedule: list[tuple[int, str]], negative_prompt: str
) -> ScheduledTextEmbeds:
    """Every distinct prompt of ``schedule`` encoded once; ``positive`` is the first one's."""
    prompts = sorted({p for _, p in schedule})
    _models.load(text_encoder)
    with torch.inference_mode():
        encoded = text_encoder.obj.encode([*prompts, negative_prompt])  # (L_i, text_dim) each
    by_prompt = {p: e.float().cpu() for p, e in zip(prompts, encoded, strict=False)}
    return ScheduledTextEmbeds(
        positive=by_prompt[schedule[0][1]],
        negative=encoded[-1].float().cpu(),
        schedule=list(schedule),
        by_prompt=by_prompt,
    )


NODES = [TextEncode]
