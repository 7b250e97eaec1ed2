"""infinitetalk.weights: one consistent list (unique keys, a source and evidence for every downloadable file),
documented name for name in docs/WEIGHTS.md, and the part names used by every front end."""

from __future__ import annotations

from pathlib import Path

import pytest

from infinitetalk.errors import InputError
from infinitetalk.weights import SPECS, Component, iter_published, parse_components, spec

DOCS = Path(__file__).resolve().parents[2] / "docs" / "WEIGHTS.md"


def test_keys_are_unique_and_every_component_has_files():
    for component in Component:
        keys = [f.key for f in spec(component).files]
        assert keys and len(set(keys)) == len(keys), component
    assert set(SPECS) == set(Component)


def test_every_required_component_has_an_official_and_a_comfyui_file():
    for component in (Component.DIT, Component.ADAPTER_SINGLE, Component.ADAPTER_MULTI, Component.TEXT_ENCODER,
                      Component.CLIP, Component.VAE, Component.AUDIO_ENCODER, Component.TTS):  # fmt: skip
        assert spec(component).first("official") and spec(component).first("comfyui"), component


def test_downloadable_files_name_their_source_and_evidence():
    for s, f in iter_published():
        assert f.evidence and all(e.startswith("https://") for e in f.evidence), (s.component, f.key)
        if f.hub:
            assert f.repo and f.downloads, (s.component, f.key)
            assert all(d.url.startswith(f"https://huggingface.co/{d.repo}/resolve/") for d in f.downloads)


def test_every_published_name_is_documented():
    text = DOCS.read_text(encoding="utf-8")
    for s, f in iter_published():
        assert f.name in text, (s.component, f.name)
        for repo in {d.repo for d in f.downloads}:
            assert repo in text, (s.component, repo)


def test_part_names_are_the_enum_values():
    assert parse_components(["dit", "adapter_multi", "lora"]) == [
        Component.DIT,
        Component.ADAPTER_MULTI,
        Component.LORA,
    ]
    with pytest.raises(InputError, match="unknown component 'adapter'; choose from dit, adapter_single"):
        parse_components(["adapter"])
