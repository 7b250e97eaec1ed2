"""Alpha: the portrait on a key-colour backdrop (before generation) and the keyer (after it).

Portrait Backdrop takes the subject mask of any background-removal node; Key marks the sampler's frames to be
keyed window by window when Video Combine writes them (an alpha format, or over a background). The maths is
in ``infinitetalk.keying`` and ``infinitetalk.composite``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from . import _common as c
from ._api import io, ui
from ._bridge import image_to_uint8, uint8_to_image
from ._widgets import advanced

log = logging.getLogger(__name__)

CATEGORY_COMPOSITING = "InfiniteTalk/compositing"
KEY_CHOICES_TIP = "auto, a name (green, blue, magenta, cyan, yellow, red), #rrggbb or r,g,b"


@dataclass
class KeyedFrames:
    """The sampler's frames (on disk) with the key to apply when they are written: constant memory."""

    source: object  # nodes._bridge.FrameStream (kept alive: its run folder lives as long as it does)
    key: object  # infinitetalk.keying.KeySettings
    hint: tuple[int, int, int] | None = None

    def __getattr__(self, name):  # store, width, height, fps, soundtrack, num_frames, ...
        if name in ("source", "key", "hint"):
            raise AttributeError(name)
        return getattr(self.source, name)


class PortraitBackdrop(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfiniteTalkPortraitBackdrop",
            display_name="InfiniteTalk Portrait Backdrop",
            category=CATEGORY_COMPOSITING,
            description="Puts the portrait's subject on a plain backdrop of a key colour, so the generated video "
            "can be keyed to a transparent background (InfiniteTalk Key). The mask comes from any "
            "background-removal node (1 on the person). The key colour is chosen far from the person's own "
            "colours; the matte is eroded and feathered so no halo of the old background remains.",
            inputs=[
                io.Image.Input("image", tooltip="The portrait (first image of a batch)."),
                io.Mask.Input(
                    "mask",
                    tooltip="The person's mask from your background-removal node (1 = person). A mask that is "
                    "1 on the background (Load Image's alpha mask) is recognised and inverted.",
                ),
                io.String.Input(
                    "key_color",
                    default="auto",
                    tooltip=f"Backdrop colour: {KEY_CHOICES_TIP}. auto: the candidate farthest from the "
                    "person's colours (measured on the image).",
                ),
                io.Float.Input(
                    "erode",
                    default=2.0,
                    min=0.0,
                    max=20.0,
                    step=0.5,
                    tooltip="Pixels cut from the mask's edge, where the old background still shows (2).",
                ),
                io.Float.Input(
                    "feather",
                    default=1.5,
                    min=0.0,
                    max=20.0,
                    step=0.5,
                    tooltip="Softness of the cut-out edge in pixels (1.5): hair and edges blend into the "
                    "backdrop instead of a hard outline.",
                ),
            ],
            outputs=[
                io.Image.Output(
                    display_name="image", tooltip="The portrait on the backdrop: connect to the sampler."
                ),
                io.String.Output(
                    display_name="key_color",
                    tooltip="The backdrop colour (#rrggbb): connect to InfiniteTalk Key's backdrop_color.",
                ),
                io.Mask.Output(display_name="matte", tooltip="The eroded, feathered matte that was used."),
            ],
        )

    @classmethod
    def execute(cls, image, mask, key_color="auto", erode=2.0, feather=1.5) -> io.NodeOutput:
        from ..infinitetalk.keying import color_hex, parse_color, place_on_backdrop

        colour = parse_color(key_color)
        portrait = image_to_uint8(image[0])
        m = mask[0] if mask.ndim == 3 else mask
        result = place_on_backdrop(portrait, m.float().cpu().numpy(), colour, erode, feather)
        log.info("Portrait Backdrop: %s backdrop %s", result.key_name, color_hex(result.key_color))
        out = uint8_to_image(result.image)
        matte = torch.from_numpy(result.matte)[None]
        return io.NodeOutput(out, color_hex(result.key_color), matte, ui=ui.PreviewImage(out, cls=cls))


class Key(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="InfiniteTalkKey",
            display_name="InfiniteTalk Key",
            category=CATEGORY_COMPOSITING,
            description="Keys the backdrop out of the sampler's frames: a transparent background for an alpha "
            "format of Video Combine (ProRes 4444, WebM, FFV1, PNG) or for its background (a slide or a video). "
            "Works window by window as the frames are written (memory stays flat); the backdrop colour is "
            "measured on the frames and again every second, so a drifting colour is followed. The defaults "
            "work without tuning.",
            inputs=[
                c.Frames.Input(
                    "frames", tooltip="Frames from InfiniteTalk Sampler (made from a portrait on a backdrop)."
                ),
                io.String.Input(
                    "backdrop_color",
                    optional=True,
                    force_input=True,
                    tooltip="The backdrop colour from InfiniteTalk Portrait Backdrop: a first guess (the "
                    "frames decide).",
                ),
                io.String.Input(
                    "key_color",
                    default="auto",
                    tooltip=f"Colour to key: {KEY_CHOICES_TIP}. auto: measured on the frames (starting from "
                    "backdrop_color when connected).",
                ),
                io.Boolean.Input(
                    "follow",
                    default=True,
                    tooltip="Measure the backdrop again every second of video (long runs drift in colour). Off: "
                    "keep the first measure (or the given key_color exactly).",
                ),
                advanced(
                    io.Float.Input(
                        "softness",
                        default=0.7,
                        min=0.0,
                        max=10.0,
                        step=0.1,
                        tooltip="Edge softness in pixels (0.7): a Gaussian blur of the alpha edge. 0: hard edges.",
                    )
                ),
                advanced(
                    io.Float.Input(
                        "spill",
                        default=1.0,
                        min=0.0,
                        max=1.0,
                        step=0.05,
                        tooltip="Spill suppression (1): removes the backdrop's colour cast from hair and edges. "
                        "0: keep the colours as generated.",
                    )
                ),
                advanced(
                    io.Float.Input(
                        "temporal",
                        default=0.5,
                        min=0.0,
                        max=0.95,
                        step=0.05,
                        tooltip="Temporal smoothing (0.5): how much of the previous frame's alpha a still pixel "
                        "keeps, against flicker. Motion passes through unsmoothed. 0: none.",
                    )
                ),
                advanced(
                    io.Float.Input(
                        "clip_black",
                        default=0.0,
                        min=0.0,
                        max=0.9,
                        step=0.05,
                        tooltip="Opaque floor, as a fraction of the key colour's strength (0 = measured only). "
                        "Raise it when parts of the person with a little of the key's hue turn see-through.",
                    )
                ),
                advanced(
                    io.Float.Input(
                        "clip_white",
                        default=3.0,
                        min=0.0,
                        max=10.0,
                        step=0.5,
                        tooltip="Backdrop tolerance in noise sigmas (3): pixels this close to the backdrop are "
                        "fully transparent. Raise it when the backdrop shows as a faint veil.",
                    )
                ),
            ],
            outputs=[
                c.Frames.Output(
                    display_name="frames",
                    tooltip="The frames, keyed when written: connect to InfiniteTalk Video Combine.",
                )
            ],
        )

    @classmethod
    def execute(
        cls,
        frames,
        key_color="auto",
        follow=True,
        backdrop_color=None,
        softness=0.7,
        spill=1.0,
        temporal=0.5,
        clip_black=0.0,
        clip_white=3.0,
    ) -> io.NodeOutput:
        from ..infinitetalk.keying import KeySettings, parse_color

        if not hasattr(frames, "store"):
            raise ValueError(
                "InfiniteTalk Key needs 'frames' from InfiniteTalk Sampler: connect its frames output"
            )
        settings = KeySettings(
            key_color=parse_color(key_color),
            follow=follow,
            clip_black=clip_black,
            clip_white=clip_white,
            spill=spill,
            softness=softness,
            temporal=temporal,
        )
        hint = parse_color(backdrop_color, name="backdrop_color") if backdrop_color else None
        source = frames.source if isinstance(frames, KeyedFrames) else frames
        return io.NodeOutput(KeyedFrames(source, settings, hint))


NODES = [PortraitBackdrop, Key]
