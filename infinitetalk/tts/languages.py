"""Kokoro languages and their offline grapheme-to-phoneme front ends.

Every front end turns text into misaki ``MToken``s (``text``, ``phonemes``, ``whitespace``)
whose phonemes use only characters of the model's vocabulary, so that kokoro's
``KPipeline.generate_from_tokens`` can chunk them (at most 510 phonemes per chunk) and
``KPipeline.join_timestamps`` can give each token its start and end time.

- English ('a', 'b'): misaki's lexicon G2P (what ``KPipeline`` uses) with espeak-ng for
  words outside the lexicon. misaki asks spaCy for ``en_core_web_sm`` and downloads it when
  missing; here the model is used only when it is installed, otherwise spaCy's rule-based
  English tokenizer (shipped with spaCy) stands in and punctuation is tagged by rule.
  Nothing is downloaded.
- Spanish, French, Hindi, Italian, Brazilian Portuguese ('e', 'f', 'h', 'i', 'p'):
  misaki's ``EspeakG2P`` (espeakng-loader ships the espeak-ng library and data).
- Mandarin ('z'): misaki's ``ZHG2P`` (jieba, pypinyin, cn2an: ``misaki[zh]``).
- Japanese ('j'): misaki's ``JAG2P`` (``misaki[ja]``: pyopenjtalk, fugashi, unidic).

Non-English text is cut into phrases at punctuation; a phrase becomes one token per word
when the phonemiser returns one phoneme word per text word, else one token.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InputError
from .captions import OPENING_MARKS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Language:
    code: str  # kokoro lang_code
    name: str
    espeak: str | None = None  # espeak-ng voice for the espeak front end


LANGUAGES: dict[str, Language] = {
    "a": Language("a", "American English", "en-us"),
    "b": Language("b", "British English", "en-gb"),
    "e": Language("e", "Spanish", "es"),
    "f": Language("f", "French", "fr-fr"),
    "h": Language("h", "Hindi", "hi"),
    "i": Language("i", "Italian", "it"),
    "j": Language("j", "Japanese"),
    "p": Language("p", "Brazilian Portuguese", "pt-br"),
    "z": Language("z", "Mandarin Chinese"),
}

# fmt: off
_ALIASES = {
    "en": "a", "en-us": "a", "en_us": "a", "en-gb": "b", "en_gb": "b", "es": "e", "fr": "f",
    "fr-fr": "f", "hi": "h", "it": "i", "ja": "j", "jp": "j", "pt": "p", "pt-br": "p",
    "pt_br": "p", "zh": "z", "zh-cn": "z", "cmn": "z",
}

# Full-width and other punctuation -> the punctuation phonemes Kokoro knows.
_PUNCT_PHONEMES = {
    "，": ",", "、": ",", "。": ".", "．": ".", "！": "!", "？": "?", "；": ";", "：": ":",
    "…": "…", "—": "—", "–": "—", "「": "“", "」": "”", "『": "“", "』": "”", "《": "“",
    "》": "”", "（": "(", "）": ")", "«": "“", "»": "”",
}
# fmt: on
_PUNCT_CHARS = ',.!?;:…—–，、。．！？；：「」『』《》（）«»"“”()'
_PHRASE_RE = re.compile(rf"([^{re.escape(_PUNCT_CHARS)}]*)([{re.escape(_PUNCT_CHARS)}\s]*)")
MAX_TOKEN_PHONEMES = 400  # a longer phrase is split (kokoro truncates a chunk at 510)


def resolve_lang(lang: str | None, voice: str) -> str:
    """Kokoro lang code for ``lang`` (a code or alias), or from the voice name's first letter."""
    if lang is None or not str(lang).strip():
        code = voice.split(",")[0].strip()[:1].lower()
        if code not in LANGUAGES:
            raise InputError(
                f"cannot tell the language of voice '{voice}' from its first letter: pass lang= one of "
                f"{sorted(LANGUAGES)}"
            )
        return code
    key = str(lang).strip().lower()
    code = _ALIASES.get(key, key)
    if code not in LANGUAGES:
        names = ", ".join(f"'{c}' ({v.name})" for c, v in LANGUAGES.items())
        raise InputError(f"unknown TTS language '{lang}': expected one of {names}")
    return code


def _filter(ps: str, vocab: dict[str, int]) -> str:
    """Keep only phonemes the model knows (kokoro drops the others, which would shift timestamps)."""
    return "".join(c for c in ps if c in vocab)


def _token(text: str, phonemes: str, whitespace: str):
    from misaki.token import MToken

    return MToken(text=text, tag="", whitespace=whitespace, phonemes=phonemes)


# -- English -----------------------------------------------------------------------------------------
# fmt: off
_PENN_PUNCT = {
    ".": ".", "!": ".", "?": ".", ",": ",", ";": ":", ":": ":", "…": ":", "—": ":", "–": ":", "-": ":",
    "(": "-LRB-", "[": "-LRB-", "{": "-LRB-", ")": "-RRB-", "]": "-RRB-", "}": "-RRB-",
    '"': '""', "“": "``", "”": "''", "$": "$", "#": "#",
}
# fmt: on


def _english_g2p(british: bool):
    """misaki's English G2P without any download (see module docstring)."""
    import spacy
    from misaki import en, espeak

    class OfflineEnglishG2P(en.G2P):
        def __init__(self, nlp, tagged: bool) -> None:  # misaki's __init__ would download
            self.version, self.british, self.nlp, self.tagged = None, british, nlp, tagged
            self.lexicon = en.Lexicon(british)
            self.fallback = espeak.EspeakFallback(british=british)
            self.unk = ""

        def tokenize(self, text, tokens, features):
            out = super().tokenize(text, tokens, features)
            return out if self.tagged else _tag_punctuation(out)

    if spacy.util.is_package("en_core_web_sm"):
        nlp, tagged = spacy.load("en_core_web_sm", enable=["tok2vec", "tagger"]), True
    else:
        logger.info("spaCy en_core_web_sm not installed: English uses spaCy's rule tokenizer (no POS tags)")
        nlp, tagged = spacy.blank("en"), False
    return OfflineEnglishG2P(nlp, tagged)


_NUMBER = re.compile(r"\d[\d.,]*")


def _tag_punctuation(tokens: list) -> list:
    """The Penn tags misaki reads without a tagger: punctuation (spoken as pauses), numbers
    (``CD``, so that "$5" reads as dollars) and in-word hyphens (``HYPH``, not a pause)."""
    for i, tk in enumerate(tokens):
        tag = _PENN_PUNCT.get(tk.text[:1]) if tk.text and not any(c.isalnum() for c in tk.text) else None
        if tk.text in ("-", "–") and not (tk.whitespace or (i and tokens[i - 1].whitespace)):
            tag = "HYPH"
        elif _NUMBER.fullmatch(tk.text):
            tag = "CD"
        if tag:
            tk.tag = tag
    return tokens


def _english_front_end(british: bool, vocab: dict[str, int]) -> Callable[[str], list]:
    g2p = _english_g2p(british)

    def tokens(text: str) -> list:
        _, toks = g2p(text)
        for tk in toks:
            tk.phonemes = _filter(tk.phonemes or "", vocab)
        return toks

    return tokens


# -- phrase-based front ends (espeak languages, Mandarin, Japanese) ---------------------------------
def _phonemiser(code: str, version: str | None) -> Callable[[str], str]:
    """``text -> phoneme string`` for the non-English languages."""
    if code == "z":
        from misaki import zh

        g2p = zh.ZHG2P(version=version)
        return lambda text: g2p(text)[0] or ""
    if code == "j":
        try:
            from misaki import ja
        except ImportError as exc:
            raise InputError(
                f"Japanese TTS (lang 'j') needs misaki's Japanese G2P, which is not installed ({exc.name} "
                "missing): pip install 'misaki[ja]' (it also needs the unidic or OpenJTalk dictionary)"
            ) from exc
        g2p = ja.JAG2P()
        return lambda text: g2p(text)[0] or ""
    from misaki import espeak

    g2p = espeak.EspeakG2P(language=LANGUAGES[code].espeak)
    return lambda text: g2p(text)[0] or ""


def _phrases(text: str) -> list[tuple[str, str]]:
    """``[(phrase, punctuation and spaces after it), ...]`` covering ``text``."""
    return [(m.group(1), m.group(2)) for m in _PHRASE_RE.finditer(text) if m.group(0)]


def _split_long(phrase: str, phonemise: Callable[[str], str], vocab) -> list[tuple[str, str]]:
    """``[(text, phonemes)]`` for a phrase, halved until each piece is short enough."""
    ps = _filter(phonemise(phrase), vocab).strip()
    if len(ps) <= MAX_TOKEN_PHONEMES or len(phrase) < 2:
        return [(phrase, ps)]
    middle = len(phrase) // 2
    cut = phrase.rfind(" ", 0, middle) + 1 or phrase.find(" ", middle) + 1 or middle
    return _split_long(phrase[:cut], phonemise, vocab) + _split_long(phrase[cut:], phonemise, vocab)


def _phrase_tokens(text: str, ps: str, spaced: bool, trailing: str) -> list:
    """Tokens for one phrase: one per word when the phoneme words match the text words."""
    words, parts = text.split(), ps.split()
    if spaced and len(words) == len(parts) > 1:
        return [
            _token(w, p, " " if k < len(words) - 1 else trailing)
            for k, (w, p) in enumerate(zip(words, parts, strict=True))
        ]
    return [_token(text.strip(), ps, trailing)]


def _punct_tokens(punct: str, vocab: dict[str, int]) -> list:
    """One token per run of marks; opening marks (next word's) apart from closing ones."""
    out = []
    for group, space in re.findall(r"(\S+)(\s*)", punct):
        cut = next((k for k, c in enumerate(group) if c in OPENING_MARKS), len(group))
        for marks, ws in ((group[:cut], space if cut == len(group) else ""), (group[cut:], space)):
            if marks:
                ps = _filter("".join(_PUNCT_PHONEMES.get(c, c) for c in marks), vocab)
                out.append(_token(marks, ps, ws))
    return out


def _phrase_front_end(code: str, vocab: dict[str, int], version: str | None) -> Callable[[str], list]:
    phonemise = _phonemiser(code, version)
    spaced = code not in "zj"

    def tokens(text: str) -> list:
        out = []
        for phrase, punct in _phrases(text):
            if phrase.strip():
                pieces = _split_long(phrase.strip(), phonemise, vocab)
                for k, (piece, ps) in enumerate(pieces):
                    last = k == len(pieces) - 1
                    spaced_end = phrase[-1:].isspace() or punct[:1].isspace() or not punct
                    gap = " " if (spaced and not last) or (last and spaced_end) else ""
                    out += _phrase_tokens(piece, ps, spaced, gap) if ps else []
            out += _punct_tokens(punct, vocab)
        return out

    return tokens


def front_end(code: str, vocab: dict[str, int], zh_version: str | None = None) -> Callable[[str], list]:
    """``text -> list[MToken]`` for kokoro language ``code`` (offline; see module docstring)."""
    if code in "ab":
        return _english_front_end(code == "b", vocab)
    return _phrase_front_end(code, vocab, zh_version)
