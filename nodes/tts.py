"""Kokoro text-to-speech nodes: one voice, or a two-speaker dialogue with aligned tracks."""

from __future__ import annotations

from . import _common as c
from . import _models
from ._api import io
from ._widgets import advanced
from .audio import numpy_to_audio
from .loaders import default_voice, voice_options

AUTO = "auto (from the voice name)"


def language_options() -> list[str]:
    from ..infinitetalk.tts.languages import LANGUAGES

    return [AUTO] + [f"{code}: {lang.name}" for code, lang in LANGUAGES.items()]


def lang_code(option: str) -> str | None:
    return None if option == AUTO else option.split(":", 1)[0]


def _check_request(text, voices: dict, language) -> str | bool:
    """validate_inputs of both TTS nodes: the text says something, the voices and the language exist."""
    from ..infinitetalk.errors import InputError
    from ..infinitetalk.tts import check_tts_text

    try:
        if isinstance(text, str):
            check_tts_text(text)
        if isinstance(language, str) and language not in language_options():
            return f"language '{language}' is unknown: use one of {', '.join(language_options())}"
        known = voice_options()
        for name, voice in voices.items():
            for part in (v.strip() for v in str(voice).split(",")) if isinstance(voice, str) else ():
                if part not in known:
                    return f"{name} '{part}' is not a Kokoro voice: use one of {', '.join(known[:12])}"
        if isinstance(text, str) and len(voices) > 1:
            from ..infinitetalk.tts.dialogue import parse_dialogue

            parse_dialogue(text, (1, 2))
    except InputError as err:
        return str(err)
    return True


def _common_inputs(default_text: str, text_tooltip: str) -> list:
    return [
        io.Custom("INFINITETALK_KOKORO").Input("kokoro", tooltip="From InfiniteTalk Kokoro TTS Loader."),
        io.String.Input("text", multiline=True, default=default_text, tooltip=text_tooltip),
    ]


def _speed_language() -> list:
    return [
        io.Float.Input(
            "speed", default=1.0, min=0.25, max=4.0, step=0.05, tooltip="Speaking rate (1 = normal)."
        ),
        advanced(
            io.Combo.Input(
                "language",
                options=language_options(),
                default=AUTO,
                tooltip="Pronunciation rules. Default: the voice's language (its first letter: a = "
                "American English, b = British, e, f, h, i, j, p, z = Mandarin).",
            )
        ),
    ]


class TextToSpeech(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        voices = voice_options()
        return io.Schema(
            node_id="InfiniteTalkTTS",
            display_name="InfiniteTalk Text to Speech (Kokoro)",
            category=c.CATEGORY_TTS,
            description="Says the text with a Kokoro voice (24 kHz, offline). Also returns SRT captions timed to "
            "the speech.",
            inputs=[
                *_common_inputs(
                    "Hello! This video was made from a single photo and this sentence.",
                    "What to say. Empty lines start new paragraphs.",
                ),
                io.Combo.Input(
                    "voice",
                    options=voices,
                    default=default_voice(voices),
                    tooltip="Voice file (voices/<name>.pt next to the Kokoro model).",
                ),
                *_speed_language(),
            ],
            outputs=[
                io.Audio.Output(display_name="audio", tooltip="The speech (mono, 24 kHz)."),
                io.String.Output(display_name="srt", tooltip="Captions (SRT text) timed to the speech."),
            ],
        )

    @classmethod
    def validate_inputs(cls, text=None, voice=None, language=None):
        return _check_request(text, {"voice": voice}, language)

    @classmethod
    def execute(cls, kokoro, text, voice, speed, language=AUTO) -> io.NodeOutput:
        _models.load(kokoro)
        speech = kokoro.obj.speak(text, voice, speed=speed, lang=lang_code(language))
        return io.NodeOutput(numpy_to_audio(speech.audio, speech.sample_rate), speech.srt())


class DialogueTTS(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        voices = voice_options()
        first, second = default_voice(voices, 1), default_voice(voices, 2)
        return io.Schema(
            node_id="InfiniteTalkDialogueTTS",
            display_name="InfiniteTalk Dialogue TTS (Kokoro)",
            category=c.CATEGORY_TTS,
            description="Two-person dialogue: '(s1) ... (s2) ...' or '[S1] ... [S2] ...'. Each turn is said with its "
            "speaker's voice while the other track stays silent, giving two aligned tracks for a two-speaker video "
            "(para mode) and their mix.",
            inputs=[
                *_common_inputs(
                    "(s1) Did you see the new video? (s2) I did, it was made from a single photo!",
                    "The dialogue; untagged text belongs to speaker 1.",
                ),
                io.Combo.Input(
                    "voice_1",
                    options=voices,
                    default=first,
                    tooltip="Voice of speaker 1 (left person by default).",
                ),
                io.Combo.Input(
                    "voice_2",
                    options=voices,
                    default=second,
                    tooltip="Voice of speaker 2 (right person by default).",
                ),
                io.Float.Input(
                    "pause",
                    default=0.3,
                    min=0.0,
                    max=10.0,
                    step=0.05,
                    tooltip="Seconds of silence between turns.",
                ),
                *_speed_language(),
            ],
            outputs=[
                io.Audio.Output(display_name="mix", tooltip="Both speakers (the soundtrack)."),
                io.Audio.Output(
                    display_name="speaker_1", tooltip="Speaker 1's track (silent while speaker 2 talks)."
                ),
                io.Audio.Output(
                    display_name="speaker_2", tooltip="Speaker 2's track (silent while speaker 1 talks)."
                ),
                io.String.Output(
                    display_name="srt", tooltip="Captions (SRT text), each line prefixed S1:/S2:."
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, text=None, voice_1=None, voice_2=None, language=None):
        return _check_request(text, {"voice_1": voice_1, "voice_2": voice_2}, language)

    @classmethod
    def execute(cls, kokoro, text, voice_1, voice_2, pause, speed, language=AUTO) -> io.NodeOutput:
        _models.load(kokoro)
        dialogue = kokoro.obj.speak_dialogue(
            text, {1: voice_1, 2: voice_2}, speed=speed, lang=lang_code(language), pause_s=pause
        )
        sr = dialogue.sample_rate
        one, two = dialogue.tracks
        return io.NodeOutput(
            numpy_to_audio(dialogue.mix, sr), numpy_to_audio(one, sr), numpy_to_audio(two, sr), dialogue.srt()
        )


NODES = [TextToSpeech, DialogueTTS]
