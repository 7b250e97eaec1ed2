"""Kokoro TTS through kokoro's real KModel/KPipeline on the tiny random checkpoint.

The whole module runs with network sockets blocked: every connect/DNS attempt is recorded
and fails, and ``test_nothing_tried_the_network`` checks that none was made (a library that
catches the failure and falls back silently would still be caught).
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch

from tests.needs import need_module  # noqa: E402

need_module("kokoro", "pip install -r requirements.txt (kokoro>=0.9.4)")
need_module("misaki", "pip install -r requirements.txt (misaki[en,zh]>=0.9.4)")

from kokoro.pipeline import KPipeline  # noqa: E402

from infinitetalk.errors import CheckpointError, InputError  # noqa: E402
from infinitetalk.media.captions import Cue, srt_parse  # noqa: E402
from infinitetalk.tiny import kokoro as tiny_kokoro  # noqa: E402
from infinitetalk.tts import (  # noqa: E402
    SAMPLE_RATE,
    KokoroTTS,
    list_voices,
    parse_dialogue,
    phrase_cues,
    resolve_lang,
    word_cues,
)
from infinitetalk.tts.languages import MAX_TOKEN_PHONEMES, front_end  # noqa: E402

FRAME = 600 / SAMPLE_RATE  # one Kokoro duration frame: 25 ms
EN = "Hello world, this is a short test."
ZH = "你好，世界。今天天气很好！"


@pytest.fixture(scope="module")
def network_attempts():
    """Block sockets for the module; the list collects every attempt."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network disabled in test_tts")

    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", lambda self, *a: refuse(*a))
    mp.setattr(socket.socket, "connect_ex", lambda self, *a: refuse(*a))
    mp.setattr(socket, "getaddrinfo", refuse)
    mp.setattr(socket, "create_connection", refuse)
    yield attempts
    mp.undo()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    tiny_kokoro.write_all(root, seed=0)
    return root


@pytest.fixture(scope="module")
def tts(root, network_attempts):
    return KokoroTTS(root / "weights" / "Kokoro-82M")


@pytest.fixture(scope="module")
def en_speech(tts):
    return tts.speak(EN, "am_adam")


@pytest.fixture(scope="module")
def zh_speech(tts):
    return tts.speak(ZH, "zf_xiaobei")


@pytest.fixture(scope="module")
def dialogue(tts):
    text = "(s1) Hello there, my friend. [S2] Hi! (s1) How are you?"
    return tts.speak_dialogue(text, {1: "af_heart", 2: "am_adam"}, pause_s=0.1)


def _words(text: str) -> list[str]:
    return text.split()


def _check_timeline(cues, duration: float) -> None:
    """Cues start at >= 0, each ends after it starts, starts never go back, all within the audio."""
    assert cues
    starts = [c.start for c in cues]
    assert starts == sorted(starts)
    for a, b in zip(cues, cues[1:], strict=False):
        assert a.end <= b.start + 1e-9
    assert all(0.0 <= c.start <= c.end <= duration + 1e-9 for c in cues)


# -- tiny checkpoint -----------------------------------------------------------------------------------
def test_tiny_layout_both_trees(root):
    for folder in (root / "weights" / "Kokoro-82M", root / "models" / "kokoro"):
        config = json.loads((folder / "config.json").read_text("utf-8"))
        assert len(config["vocab"]) == 114 and config["vocab"]["ɹ"] == 123 and config["vocab"]["ᵻ"] == 177
        assert config["style_dim"] == 128 and config["hidden_dim"] == 512
        assert {"af_heart", "am_adam", "bf_emma", "zf_xiaobei", "zm_yunjian"} <= set(list_voices(folder))
    pack = torch.load(root / "models" / "kokoro" / "voices" / "af_heart.pt", weights_only=True)
    assert pack.shape == (510, 1, 256) and pack.dtype == torch.float32


def test_tiny_weights_fp16_loaded_as_fp32(root, tts):
    state = torch.load(root / "models" / "kokoro" / "kokoro-v1_0.pth", weights_only=True)
    assert set(state) == {"bert", "bert_encoder", "predictor", "text_encoder", "decoder"}
    stored = state["predictor"]["module.duration_proj.linear_layer.bias"]
    assert stored.dtype == torch.float16 and all(k.startswith("module.") for k in state["decoder"])
    loaded = tts.model.predictor.duration_proj.linear_layer.bias
    assert loaded.dtype == torch.float32
    torch.testing.assert_close(loaded, stored.float(), rtol=0, atol=0)


def test_comfyui_tree_and_models_root_resolve(root, tts):
    assert list_voices(root / "models") == list_voices(root / "models" / "kokoro") == tts.voices
    comfy = KokoroTTS(root / "models")  # ComfyUI's models/ root: finds models/kokoro/
    assert comfy.model_dir == root / "models" / "kokoro" and comfy.voices == tts.voices


# -- single voice ------------------------------------------------------------------------------------------
def test_english_audio_grows_with_text(tts, en_speech):
    short = tts.speak("Hello.", "am_adam")
    long = en_speech
    for s in (short, long):
        assert s.sample_rate == SAMPLE_RATE and s.audio.dtype == np.float32 and s.audio.ndim == 1
        assert np.isfinite(s.audio).all() and np.abs(s.audio).max() > 1e-3
        assert len(s.audio) % 600 == 0  # whole 25 ms frames
    assert len(long.audio) > 3 * len(short.audio)


def test_speed_changes_length(tts, en_speech):
    slow = tts.speak(EN, "am_adam", speed=0.5)  # durations are divided by speed before rounding
    assert len(slow.audio) > 1.5 * len(en_speech.audio)


def test_english_word_cues_and_srt(en_speech):
    speech = en_speech
    assert [c.text for c in speech.words] == _words(EN)
    _check_timeline(speech.words, speech.duration)
    _check_timeline(speech.cues, speech.duration)
    assert " ".join(c.text for c in speech.cues) == EN
    assert speech.cues[0].text == "Hello world,"  # cut after the comma
    # the last word ends within two frames of the audio end (only the end-of-sentence frame is left)
    assert speech.duration - speech.words[-1].end <= 2 * FRAME + 1e-9
    parsed = srt_parse(speech.srt(words=True))
    assert [c.text for c in parsed] == _words(EN)
    # SRT keeps milliseconds: 0.5 ms of rounding either way
    assert [c.start for c in parsed] == pytest.approx([c.start for c in speech.words], abs=5e-4 + 1e-9)


@pytest.mark.parametrize(
    ("code", "text", "words"),
    [
        ("e", "Hola, ¿cómo estás? Muy bien.", ["Hola", ",", "¿cómo", "estás", "?", "Muy", "bien", "."]),
        ("f", "Bonjour, les amis.", ["Bonjour", ",", "les", "amis", "."]),
        ("i", "Ciao, come stai?", ["Ciao", ",", "come", "stai", "?"]),
        ("p", "Olá, tudo bem?", ["Olá", ",", "tudo", "bem", "?"]),
        ("h", "नमस्ते, आप कैसे हैं?", ["नमस्ते", ",", "आप", "कैसे", "हैं", "?"]),
    ],
)
def test_espeak_languages_word_tokens(tts, code, text, words):
    """espeak-ng front ends: one token per word (phonemes in the vocabulary) plus punctuation."""
    tokens = front_end(code, tts.model.vocab)(text)
    assert [t.text for t in tokens] == words
    assert all(t.phonemes and set(t.phonemes) <= set(tts.model.vocab) for t in tokens)


def test_chinese_phrase_cues(zh_speech):
    speech = zh_speech
    assert "".join(c.text for c in speech.words) == ZH
    assert [c.text for c in speech.words] == ["你好，", "世界。", "今天天气很好！"]
    _check_timeline(speech.words, speech.duration)
    assert np.abs(speech.audio).max() > 1e-3


def test_long_text_is_chunked_not_refused(tts):
    text = "The quick brown fox jumps over the lazy dog. " * 11
    tokens = front_end("a", tts.model.vocab)(text)
    assert len(KPipeline.tokens_to_ps(tokens)) > 510  # KPipeline must cut it into two chunks
    speech = tts.speak(text, "af_heart", speed=4.0)
    assert len(speech.words) == 9 * 11
    _check_timeline(speech.words, speech.duration)
    assert speech.words[-1].end > 0.9 * speech.duration  # the second chunk is shifted, not dropped


def test_long_unpunctuated_chinese_is_split_below_chunk_limit(tts):
    text = "我们今天去公园散步然后回家吃饭" * 30  # 450 characters, no punctuation
    tokens = front_end("z", tts.model.vocab)(text)
    assert len(tokens) > 1 and all(len(t.phonemes) <= MAX_TOKEN_PHONEMES for t in tokens)
    assert "".join(t.text for t in tokens) == text


def _timed(*items):
    """MTokens (text, phonemes, whitespace) timed 0.1 s apart, as join_timestamps leaves them."""
    from misaki.token import MToken

    out = []
    for k, (text, ps, ws) in enumerate(items):
        tk = MToken(text=text, tag="", whitespace=ws, phonemes=ps)
        if ps:
            tk.start_ts, tk.end_ts = 0.1 * k, 0.1 * (k + 1)
        out.append(tk)
    return out


def test_word_cues_glue_punctuation_and_symbols():
    tokens = _timed(
        ('"', "”", ""),
        ("Hi", "hI", ""),
        (",", ",", ""),
        ('"', "”", " "),
        ("$", "", ""),
        ("5", "fIv", " "),
        ("—", "—", " "),
        ("ok", "OkA", ""),
        (".", ".", ""),
    )
    cues = word_cues(tokens, offset=1.0, duration=0.85)
    assert [c.text for c in cues] == ['"Hi,"', "$5 —", "ok."]
    assert cues[0].start == pytest.approx(1.0) and cues[-1].end == pytest.approx(1.85)  # clipped
    _check_timeline(cues, 1.85)


def test_phrase_cues_width_rules():
    words = [Cue(k * 0.1, (k + 1) * 0.1, w) for k, w in enumerate(["Dr.", "Smith", "is", "here.", "Yes."])]
    assert [c.text for c in phrase_cues(words)] == ["Dr. Smith is here.", "Yes."]
    zh = [Cue(k * 0.1, (k + 1) * 0.1, w) for k, w in enumerate(["你好，", "“世界”！", "我们", "去。"])]
    assert [c.text for c in phrase_cues(zh)] == ["你好，“世界”！", "我们去。"]
    long = [Cue(k * 0.1, (k + 1) * 0.1, "word") for k in range(20)]
    assert all(len(c.text) <= 42 for c in phrase_cues(long))


# -- dialogue -----------------------------------------------------------------------------------------------
def test_parse_dialogue_markup():
    turns = parse_dialogue("Intro. (s1) One. [S2] Two. (S2) Three. [s1]Four.  (s2)  ")
    assert [(t.speaker, t.text) for t in turns] == [
        (1, "Intro."),
        (1, "One."),
        (2, "Two."),
        (2, "Three."),
        (1, "Four."),
    ]
    assert [(t.speaker, t.text) for t in parse_dialogue("no tags at all")] == [(1, "no tags at all")]


def test_dialogue_tracks_aligned_and_silent(dialogue):
    dlg = dialogue
    t1, t2 = dlg.tracks
    assert len(t1) == len(t2) == len(dlg.mix) and dlg.speakers == [1, 2]
    np.testing.assert_array_equal(dlg.mix, t1 + t2)
    assert [(c.speaker, c.text) for c in dlg.turns] == [
        (1, "Hello there, my friend."),
        (2, "Hi!"),
        (1, "How are you?"),
    ]
    gap = round(0.1 * SAMPLE_RATE)
    for k, turn in enumerate(dlg.turns):
        a, b = round(turn.start * SAMPLE_RATE), round(turn.end * SAMPLE_RATE)
        speaking, silent = (t1, t2) if turn.speaker == 1 else (t2, t1)
        assert np.sqrt(np.mean(silent[a:b] ** 2)) == 0.0
        assert np.sqrt(np.mean(speaking[a:b] ** 2)) > 1e-3
        if k:
            previous_end = round(dlg.turns[k - 1].end * SAMPLE_RATE)
            assert a - previous_end == gap and not dlg.mix[previous_end:a].any()
    assert dlg.turns[-1].end == pytest.approx(dlg.duration)
    _check_timeline(dlg.words, dlg.duration)
    assert all(
        turn.start <= c.start and c.end <= turn.end + 1e-9
        for turn in dlg.turns
        for c in dlg.words
        if c.speaker == turn.speaker and turn.start <= c.start < turn.end
    )
    srt = dlg.srt()
    assert "S1: Hello there," in srt and "S2: Hi!" in srt
    assert [c.speaker for c in dlg.cues] == [1, 1, 2, 1]


def test_dialogue_mixed_languages_and_one_speaker_track(tts):
    dlg = tts.speak_dialogue("[S1] Hello. [S2] 你好。", {1: "af_heart", 2: "zm_yunjian"})
    assert [c.text for c in dlg.words] == ["Hello.", "你好。"]
    silent = tts.speak_dialogue("Only me.", {1: "af_heart", 2: "am_adam"})
    assert len(silent.tracks) == 2 and not silent.tracks[1].any() and silent.tracks[0].any()


# -- errors ---------------------------------------------------------------------------------------------------
def test_unknown_speaker_tag(tts):
    with pytest.raises(InputError, match=r"'\(s3\)'.*\(s1\)/\[S1\], \(s2\)/\[S2\]"):
        tts.speak_dialogue("(s1) Hi. (s3) Who?", {1: "af_heart", 2: "am_adam"})


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda t: t.speak("   ", "af_heart"), "empty"),
        (lambda t: t.speak("Hi.", "af_nobody"), r"unknown Kokoro voice 'af_nobody'.*af_heart"),
        (lambda t: t.speak("Hi.", "af_heart", speed=0.0), r"speed=0\.0"),
        (lambda t: t.speak("Hi.", "af_heart", lang="xx"), r"unknown TTS language 'xx'"),
        (lambda t: t.speak("Hi.", "qq_voice", lang=None), r"unknown Kokoro voice 'qq_voice'"),
        (lambda t: t.speak("... !!!", "af_heart"), "nothing to pronounce"),
        (lambda t: t.speak("こんにちは", "jf_alpha"), r"misaki\[ja\]"),
        (lambda t: t.speak_dialogue("(s1) (s2)", {1: "af_heart", 2: "am_adam"}), "nothing to say"),
        (lambda t: t.speak_dialogue("Hi.", {2: "am_adam"}), "speaker number"),
        (lambda t: t.speak_dialogue("Hi.", {1: "af_heart"}, pause_s=-1), "pause_s"),
        (
            lambda t: t.speak_dialogue("Hi.", {1: "af_heart", 2: "am_nobody"}),
            "unknown Kokoro voice 'am_nobody'",
        ),
    ],
)
def test_input_errors(tts, call, pattern):
    with pytest.raises(InputError, match=pattern):
        call(tts)


def test_language_from_voice_and_aliases():
    assert [
        resolve_lang(None, v) for v in ("af_heart", "am_adam", "bm_george", "zf_xiaobei", "ef_dora")
    ] == list("aabze")
    assert resolve_lang("en-gb", "af_heart") == "b" and resolve_lang("ZH", "af_heart") == "z"
    with pytest.raises(InputError, match=r"cannot tell the language of voice 'my_voice\.pt'.*lang="):
        resolve_lang(None, "my_voice.pt")


def test_checkpoint_errors(root, tmp_path):
    with pytest.raises(CheckpointError, match="config.json, kokoro-v1_0.pth"):
        KokoroTTS(tmp_path)
    broken = tmp_path / "kokoro"
    (broken / "voices").mkdir(parents=True)
    src = root / "models" / "kokoro"
    (broken / "config.json").write_text((src / "config.json").read_text("utf-8"), "utf-8")
    state = torch.load(src / "kokoro-v1_0.pth", weights_only=True)
    del state["decoder"]["module.generator.conv_post.weight_v"]
    torch.save(state, broken / "kokoro-v1_0.pth")
    with pytest.raises(CheckpointError, match=r"miss 1 'decoder' tensors"):
        KokoroTTS(tmp_path)


def test_nothing_tried_the_network(en_speech, zh_speech, dialogue, network_attempts):
    """Loading, English and Chinese G2P and synthesis all ran with sockets blocked: no attempt at all."""
    assert en_speech.duration > 0 and zh_speech.duration > 0 and dialogue.duration > 0
    assert network_attempts == []


def test_same_seed_same_samples(tts):
    """Kokoro's vocoder draws noise: a fixed seed makes synthesis repeatable, and seeds matter."""
    a = tts.speak("Hello there.", "af_heart", seed=3).audio
    b = tts.speak("Hello there.", "af_heart", seed=3).audio
    c = tts.speak("Hello there.", "af_heart", seed=4).audio
    assert np.array_equal(a, b)
    assert a.shape == c.shape and not np.array_equal(a, c)


def test_dia_nonverbal_tags_become_pauses_or_are_dropped_never_spoken(tts, caplog):
    from infinitetalk.tts.dialogue import NONVERBAL_PAUSE_S, parse_markup

    turns, notes = parse_markup(
        "[S1] Hello there. (laughs) How are you? (sighs) [S2] Fine, (see above) thanks."
    )
    assert [(t.speaker, t.text, t.pause_before) for t in turns] == [
        (1, "Hello there. How are you?", 0.0),
        (2, "Fine, (see above) thanks.", NONVERBAL_PAUSE_S),  # unknown parentheses are read as written
    ]
    assert notes == ["(laughs) dropped: Kokoro cannot voice it", f"(sighs) -> {NONVERBAL_PAUSE_S:g} s pause"]
    with caplog.at_level("INFO"):
        dlg = tts.speak_dialogue(
            "[S1] Hello. (laughs) [S2] (Clears throat) Fine.", {1: "af_heart", 2: "am_adam"}, pause_s=0.1
        )
    assert "(clears throat) -> 0.4 s pause" in caplog.text and "(laughs) dropped" in caplog.text
    assert [c.text for c in dlg.turns] == ["Hello.", "Fine."]
    assert not any(w in c.text.lower() for c in dlg.words for w in ("laugh", "clears", "throat"))
    gap = round(dlg.turns[1].start * SAMPLE_RATE) - round(dlg.turns[0].end * SAMPLE_RATE)
    assert gap == round(0.1 * SAMPLE_RATE) + round(NONVERBAL_PAUSE_S * SAMPLE_RATE)
    said = tts.speak("(sighs) Hello.", "af_heart")
    lead = round(NONVERBAL_PAUSE_S * SAMPLE_RATE)
    assert not said.audio[:lead].any() and said.audio[lead:].any()
    assert said.words[0].start >= NONVERBAL_PAUSE_S and "sigh" not in said.srt()
    with pytest.raises(InputError, match="only non-verbal tags"):
        tts.speak("(laughs)", "af_heart")
