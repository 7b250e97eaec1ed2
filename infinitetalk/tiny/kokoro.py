"""Tiny random Kokoro-82M checkpoint in the real file layout.

``write_all(root, seed)`` writes the Hugging Face ``hexgrad/Kokoro-82M`` layout to
``root/weights/Kokoro-82M/`` and the same files to the ComfyUI tree ``root/models/kokoro/``:

- ``config.json``: the real config keys and the real phoneme vocabulary, with a small PL-BERT,
  one text/prosody layer and a cheaper vocoder (sizes the kokoro code fixes stay real: hidden
  512, style 128, 24 kHz, 600 samples per duration frame).
- ``kokoro-v1_0.pth``: a dict of the five sub-module state dicts, keys prefixed ``module.``
  like the released file, stored in float16 (``KModel`` casts to float32 on load).
- ``voices/<name>.pt``: one float32 style pack ``(510, 1, 256)`` per voice.

Random weights predict long phoneme durations; the duration head is scaled so the model
says one or two frames (25-50 ms) per phoneme and tests stay fast.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

from ..weights import KOKORO_VOICES, Component, spec

logger = logging.getLogger(__name__)

MODEL_FILE = spec(Component.TTS).published("comfy").name  # kokoro-v1_0.pth

# The released Kokoro-82M phoneme vocabulary (phoneme -> token id; 0 is the pad/boundary id).
# fmt: off
VOCAB: dict[str, int] = {
    ";": 1, ":": 2, ",": 3, ".": 4, "!": 5, "?": 6, "\u2014": 9, "\u2026": 10, '"': 11,
    "(": 12, ")": 13, "\u201c": 14, "\u201d": 15, " ": 16, "\u0303": 17, "ʣ": 18, "ʥ": 19,
    "ʦ": 20, "ʨ": 21, "ᵝ": 22, "\uab67": 23, "A": 24, "I": 25, "O": 31, "Q": 33, "S": 35,
    "T": 36, "W": 39, "Y": 41, "ᵊ": 42, "a": 43, "b": 44, "c": 45, "d": 46, "e": 47, "f": 48,
    "h": 50, "i": 51, "j": 52, "k": 53, "l": 54, "m": 55, "n": 56, "o": 57, "p": 58, "q": 59,
    "r": 60, "s": 61, "t": 62, "u": 63, "v": 64, "w": 65, "x": 66, "y": 67, "z": 68, "ɑ": 69,
    "ɐ": 70, "ɒ": 71, "æ": 72, "β": 75, "ɔ": 76, "ɕ": 77, "ç": 78, "ɖ": 80, "ð": 81, "ʤ": 82,
    "ə": 83, "ɚ": 85, "ɛ": 86, "ɜ": 87, "ɟ": 90, "ɡ": 92, "ɥ": 99, "ɨ": 101, "ɪ": 102,
    "ʝ": 103, "ɯ": 110, "ɰ": 111, "ŋ": 112, "ɳ": 113, "ɲ": 114, "ɴ": 115, "ø": 116, "ɸ": 118,
    "θ": 119, "œ": 120, "ɹ": 123, "ɾ": 125, "ɻ": 126, "ʁ": 128, "ɽ": 129, "ʂ": 130, "ʃ": 131,
    "ʈ": 132, "ʧ": 133, "ʊ": 135, "ʋ": 136, "ʌ": 138, "ɣ": 139, "ɤ": 140, "χ": 142, "ʎ": 143,
    "ʒ": 147, "ʔ": 148, "ˈ": 156, "ˌ": 157, "ː": 158, "ʰ": 162, "ʲ": 164, "↓": 169, "→": 171,
    "↗": 172, "↘": 173, "ᵻ": 177,
}
# fmt: on


STYLE_ROWS = 510  # one style row per phoneme count (1..510)
FRAMES_PER_PHONEME = 1.3  # mean duration of the tiny model, in 25 ms frames (rounds to 1 or 2)


def tiny_config() -> dict:
    """config.json of the tiny model: the real keys, small PL-BERT, one layer, one resblock.

    The vocoder upsamples 2 x 2 then an iSTFT hop of 75 (the real one: 10 x 6, hop 5): the same
    300 samples per decoder step (600 per duration frame, 24 kHz), three times cheaper on CPU.
    """
    return {
        "istftnet": {
            "upsample_kernel_sizes": [4, 4],
            "upsample_rates": [2, 2],
            "gen_istft_hop_size": 75,
            "gen_istft_n_fft": 150,
            "resblock_dilation_sizes": [[1, 3, 5]],
            "resblock_kernel_sizes": [3],
            "upsample_initial_channel": 512,
        },
        "dim_in": 64,
        "dropout": 0.2,
        "hidden_dim": 512,
        "max_conv_dim": 512,
        "max_dur": 50,
        "multispeaker": True,
        "n_layer": 1,
        "n_mels": 80,
        "n_token": 178,
        "style_dim": 128,
        "text_encoder_kernel_size": 5,
        "plbert": {
            "hidden_size": 64,
            "num_attention_heads": 2,
            "intermediate_size": 128,
            "max_position_embeddings": 512,
            "num_hidden_layers": 1,
            "dropout": 0.1,
        },
        "vocab": dict(VOCAB),
    }


def _build_modules(config: dict) -> dict[str, torch.nn.Module]:
    """The five sub-modules ``KModel`` builds from ``config``, randomly initialised."""
    from kokoro.istftnet import Decoder
    from kokoro.modules import CustomAlbert, ProsodyPredictor, TextEncoder
    from transformers import AlbertConfig

    hidden, style = config["hidden_dim"], config["style_dim"]
    bert = CustomAlbert(AlbertConfig(vocab_size=config["n_token"], **config["plbert"]))
    return {
        "bert": bert,
        "bert_encoder": torch.nn.Linear(bert.config.hidden_size, hidden),
        "predictor": ProsodyPredictor(
            style_dim=style,
            d_hid=hidden,
            nlayers=config["n_layer"],
            max_dur=config["max_dur"],
            dropout=config["dropout"],
        ),
        "text_encoder": TextEncoder(
            channels=hidden,
            kernel_size=config["text_encoder_kernel_size"],
            depth=config["n_layer"],
            n_symbols=config["n_token"],
        ),
        "decoder": Decoder(dim_in=hidden, style_dim=style, dim_out=config["n_mels"], **config["istftnet"]),
    }


def _shorten_durations(predictor: torch.nn.Module, max_dur: int) -> None:
    """Make the duration head predict about ``FRAMES_PER_PHONEME`` frames per phoneme.

    ``KModel`` sums ``max_dur`` sigmoids per phoneme; random weights give about max_dur / 2.
    """
    proj = predictor.duration_proj.linear_layer
    p = FRAMES_PER_PHONEME / max_dur
    with torch.no_grad():
        proj.weight.mul_(0.5)  # keeps some spread: durations round to 1 or 2 frames
        proj.bias.fill_(float(torch.logit(torch.tensor(p))))


def _state_dicts(modules: dict[str, torch.nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    """Released layout: ``module.``-prefixed keys (DataParallel), float16 floating tensors."""
    out = {}
    for name, module in modules.items():
        out[name] = {
            f"module.{k}": (v.half() if v.is_floating_point() else v).contiguous()
            for k, v in module.state_dict().items()
        }
    return out


def _write_model_dir(dest: Path, seed: int) -> None:
    config = tiny_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        modules = _build_modules(config)
        _shorten_durations(modules["predictor"], config["max_dur"])
        voices = {v: torch.randn(STYLE_ROWS, 1, 256) * 0.15 for v in KOKORO_VOICES}  # (510, 1, 256)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2), "utf-8")
    torch.save(_state_dicts(modules), dest / MODEL_FILE)
    (dest / "voices").mkdir(exist_ok=True)
    for name, pack in voices.items():
        torch.save(pack, dest / "voices" / f"{name}.pt")


def _mirror(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` file by file, hard-linking where the file system allows."""
    for path in sorted(src.rglob("*")):
        target = dest / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target.unlink()
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)


def write_all(root: Path, seed: int) -> None:
    """Write the tiny Kokoro model to ``root/weights/Kokoro-82M`` and ``root/models/kokoro``."""
    root = Path(root)
    official = root / "weights" / "Kokoro-82M"
    _write_model_dir(official, seed)
    _mirror(official, root / "models" / "kokoro")
    logger.info("wrote tiny Kokoro-82M to %s and %s", official, root / "models" / "kokoro")
