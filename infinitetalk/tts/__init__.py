"""Kokoro text to speech, offline: single voice, two-speaker dialogue, caption cues.

``KokoroTTS(model_dir).speak(text, voice)`` -> :class:`Speech`;
``speak_dialogue("(s1) Hi. (s2) Hello!", voices={1: "af_heart", 2: "am_adam"})`` -> :class:`Dialogue`
with one aligned track per speaker (the input of the two-speaker ``para`` mode). See docs/TTS.md.
"""

from .captions import SpeakerCue, phrase_cues, word_cues
from .checks import check_tts_request, check_tts_text
from .dialogue import SPEAKER_TAG, Turn, parse_dialogue, speaker_tag
from .kokoro import SAMPLE_RATE, Dialogue, KokoroTTS, Speech, find_model_dir, list_voices
from .languages import LANGUAGES, resolve_lang

__all__ = [
    "LANGUAGES",
    "SAMPLE_RATE",
    "SPEAKER_TAG",
    "Dialogue",
    "KokoroTTS",
    "SpeakerCue",
    "Speech",
    "Turn",
    "check_tts_request",
    "check_tts_text",
    "find_model_dir",
    "list_voices",
    "parse_dialogue",
    "phrase_cues",
    "resolve_lang",
    "speaker_tag",
    "word_cues",
]
