"""Script of many segments: speech (Kokoro or recordings) + per-segment prompts for one generation."""

from __future__ import annotations

import folder_paths

from ..infinitetalk.pipeline import DEFAULT_NEGATIVE_PROMPT
from . import _common as c
from . import _models
from ._api import io
from ._widgets import advanced
from .audio import numpy_to_audio
from .conditioning import encode_schedule
from .loaders import default_voice, voice_options
from .tts import AUTO, lang_code, language_options

EXAMPLE = """prompt: A woman talks to the camera in a bright studio, natural head movement.
[S1] Welcome back! (laughs) Today we make a video from a script.
prompt: She leans in and lowers her voice.
[S1] Every line is one segment, with its own prompt. (sighs) And the face stays the same.
"""


class Script(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        voices = voice_options()
        return io.Schema(
            node_id="InfiniteTalkScript",
            display_name="InfiniteTalk Script",
            category=c.CATEGORY_TTS,
            description="A script of several segments as one video: each line is said by Kokoro (or is a "
            "recording: 'audio: file.wav | caption', from the input folder) with its speaker ([S1]/[S2]) and the "
            "prompt set above it ('prompt: ...'). Dia-style tags like (sighs) become pauses, (laughs) is "
            "dropped. Outputs the soundtrack, one track per speaker, captions across the whole script, and "
            "text embeddings whose prompt the Sampler switches per window. Format: README, 'Scripts'.",
            inputs=[
                io.Custom("INFINITETALK_TEXT_ENCODER").Input(
                    "text_encoder", tooltip="From InfiniteTalk Text Encoder Loader (encodes every prompt)."
                ),
                io.String.Input(
                    "script",
                    multiline=True,
                    default=EXAMPLE,
                    tooltip="One segment per line; 'prompt:', 'voice 1:', 'voice 2:', 'pause:' lines set what "
                    "follows; '#' starts a comment. JSON (starting with '{') is accepted too.",
                ),
                io.Custom("INFINITETALK_KOKORO").Input(
                    "kokoro",
                    optional=True,
                    tooltip="From InfiniteTalk Kokoro TTS Loader; needed unless every segment is a recording.",
                ),
                io.Combo.Input(
                    "voice_1",
                    options=voices,
                    default=default_voice(voices, 1),
                    tooltip="Voice of speaker 1 (a 'voice 1:' line in the script wins).",
                ),
                io.Combo.Input(
                    "voice_2",
                    options=voices,
                    default=default_voice(voices, 2),
                    tooltip="Voice of speaker 2 (a 'voice 2:' line in the script wins).",
                ),
                io.Float.Input(
                    "speed", default=1.0, min=0.25, max=4.0, step=0.05, tooltip="Speaking rate (1 = normal)."
                ),
                advanced(
                    io.Combo.Input(
                        "language",
                        options=language_options(),
                        default=AUTO,
                        tooltip="Pronunciation rules. Default: each voice's language.",
                    )
                ),
                advanced(
                    io.String.Input(
                        "negative_prompt",
                        multiline=True,
                        default=DEFAULT_NEGATIVE_PROMPT,
                        tooltip="What to avoid (the same for every segment).",
                    )
                ),
            ],
            outputs=[
                io.Audio.Output(display_name="mix", tooltip="The whole script's soundtrack (24 kHz)."),
                io.Audio.Output(
                    display_name="speaker_1", tooltip="Speaker 1's track (silent while 2 talks)."
                ),
                io.Audio.Output(
                    display_name="speaker_2",
                    tooltip="Speaker 2's track (all silence for a one-speaker script: then leave it unconnected).",
                ),
                io.Custom("INFINITETALK_TEXT_EMBEDS").Output(
                    display_name="text_embeds",
                    tooltip="Per-segment prompts for the Sampler (switched per window).",
                ),
                io.String.Output(display_name="srt", tooltip="Captions across the whole script (SRT text)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, script=None, voice_1=None, voice_2=None):
        """Refused at queue time: a recording outside the input folder, a voice path, an over-long script."""
        from ..infinitetalk.errors import InputError
        from ..infinitetalk.script import check_voice_name, parse_script

        try:
            if isinstance(script, str):
                parse_script(script, folder_paths.get_input_directory(), confine=True)
            for name, voice in (("voice_1", voice_1), ("voice_2", voice_2)):
                if isinstance(voice, str):
                    check_voice_name(voice, what=name)
        except InputError as err:
            return str(err)
        return True

    @classmethod
    def execute(
        cls,
        text_encoder,
        script,
        voice_1,
        voice_2,
        speed,
        kokoro=None,
        language=AUTO,
        negative_prompt=DEFAULT_NEGATIVE_PROMPT,
    ) -> io.NodeOutput:
        from ..infinitetalk.media import srt_format
        from ..infinitetalk.script import parse_script, render_script

        # a script from a prompt: recordings inside the input folder, voices by name (infinitetalk.paths)
        parsed = parse_script(script, folder_paths.get_input_directory(), confine=True)
        if kokoro is not None:
            _models.load(kokoro)
        rendered = render_script(
            parsed,
            kokoro.obj if kokoro is not None else None,
            speed=speed,
            lang=lang_code(language),
            voices={1: voice_1, 2: voice_2},
        )
        embeds = encode_schedule(text_encoder, rendered.prompts, negative_prompt)
        sr = rendered.sample_rate
        silent = rendered.tracks[0] * 0
        tracks = [*rendered.tracks, silent][:2]
        return io.NodeOutput(
            numpy_to_audio(rendered.mix, sr),
            numpy_to_audio(tracks[0], sr),
            numpy_to_audio(tracks[1], sr),
            embeds,
            srt_format(rendered.cues),
        )


NODES = [Script]
