"""Saved API prompts from older schemas of this pack's nodes, rewritten to the running schema.

Three changes are migrated, on every ComfyUI version (the pack registers :func:`on_prompt` with
``PromptServer.add_on_prompt_handler``, which 0.3.75 and the newest ComfyUI both call before validating a
``POST /prompt``):

1. the 26-input Sampler: its expert inputs (shift, scheduler, frame_num, ...) move into an inserted
   *InfiniteTalk Sampler Options* node connected to the sampler's ``options`` input, with the same values;
2. inputs revealed by a DynamicCombo are named ``<combo>.<input>`` in prompts of a ComfyUI that has
   DynamicCombo and ``<input>`` in the flat form: each name is converted to what the running schema uses
   (``width`` <-> ``size.width``, ``srt`` <-> ``captions.srt``);
3. widget inputs added to a node since the prompt was saved (e.g. Video Combine's format, loudness, preset,
   true_peak) get their defaults, as the editor gives them to an older workflow, instead of failing
   validation as "required input missing". File choices are never filled in.

ComfyUI's Node Replacement API cannot do either: it only rewrites nodes whose type is *not* registered,
while these node ids stay the same. Saved UI workflows are migrated by the same rules in the browser
(``web/js/migrate.js``).
"""

from __future__ import annotations

import functools
import logging
import sys
from dataclasses import asdict

from ._widgets import has_dynamic_combo

log = logging.getLogger(__name__)

SAMPLER = "InfiniteTalkSampler"
SAMPLER_OPTIONS = "InfiniteTalkSamplerOptions"
# Inputs a combo reveals: node type -> {combo id: [revealed input ids]}.
REVEALED = {SAMPLER: {"size": ["width", "height"]}, "InfiniteTalkVideoCombine": {"captions": ["srt"]}}


def migrate_prompt(prompt: dict, dynamic: bool | None = None) -> list[str]:
    """Rewrite old-schema nodes of an API ``prompt`` in place; returns one line per change made.

    ``dynamic``: whether revealed inputs are named ``combo.input`` (default: what the running ComfyUI does).
    """
    from .sampler import DEFAULTS, OPTION_NAMES

    if dynamic is None:
        dynamic = has_dynamic_combo()
    changes: list[str] = []
    for node_id in list(prompt):
        node = prompt[node_id]
        if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
            continue
        inputs = node["inputs"]
        if node.get("class_type") == SAMPLER:
            legacy = {k: inputs.pop(k) for k in OPTION_NAMES if k in inputs}
            if legacy and "options" in inputs:
                changes.append(f"node {node_id}: dropped {sorted(legacy)} (an options node is connected)")
            elif legacy:
                options_id = _free_id(prompt, f"{node_id}_options")
                prompt[options_id] = {
                    "class_type": SAMPLER_OPTIONS,
                    "inputs": {**asdict(DEFAULTS), **legacy},
                    "_meta": {"title": "InfiniteTalk Sampler Options"},
                }
                inputs["options"] = [options_id, 0]
                changes.append(f"node {node_id}: {sorted(legacy)} moved to a new options node {options_id}")
        for combo, revealed in REVEALED.get(node.get("class_type"), {}).items():
            for name in revealed:
                old, new = (name, f"{combo}.{name}") if dynamic else (f"{combo}.{name}", name)
                if old in inputs and new not in inputs:
                    inputs[new] = inputs.pop(old)
                    changes.append(f"node {node_id}: input {old} renamed {new}")
        added = {k: v for k, v in widget_defaults(node.get("class_type")).items() if k not in inputs}
        if added:
            inputs.update(added)
            changes.append(f"node {node_id}: new inputs {sorted(added)} set to their defaults")
    return changes


_DEFAULTS: dict[tuple[str, bool], dict] = {}
_FILLABLE = ("INT", "FLOAT", "BOOLEAN", "STRING", "COMBO")


def widget_defaults(class_type) -> dict:
    """Widget inputs of one of this pack's nodes that declare a default (cached); sockets are left out."""
    if not isinstance(class_type, str) or not class_type.startswith("InfiniteTalk"):
        return {}
    key = (class_type, has_dynamic_combo())
    if key not in _DEFAULTS:
        cls = _pack_nodes().get(class_type)
        if cls is None:  # a class type sent in a prompt: not cached (the cache holds only the pack's nodes)
            return {}
        info = cls.INPUT_TYPES()
        widgets = {**info.get("required", {}), **info.get("optional", {})}
        _DEFAULTS[key] = {
            name: spec[1]["default"]
            for name, spec in widgets.items()
            if len(spec) > 1
            and isinstance(spec[1], dict)
            and "default" in spec[1]
            and (spec[0] in _FILLABLE or isinstance(spec[0], list))
            and not spec[1].get("forceInput")
        }
    return _DEFAULTS[key]


@functools.cache
def _pack_nodes() -> dict:
    from . import audio, checks, conditioning, doctor, loaders, sampler, script, tts, video

    modules = (loaders, doctor, audio, tts, conditioning, sampler, video, checks, script)
    return {cls.GET_SCHEMA().node_id: cls for module in modules for cls in module.NODES}


def _free_id(prompt: dict, wanted: str) -> str:
    candidate, n = wanted, 1
    while candidate in prompt:
        n += 1
        candidate = f"{wanted}{n}"
    return candidate


def on_prompt(json_data: dict) -> dict:
    """``PromptServer`` hook: migrate the prompt of a ``POST /prompt`` body before ComfyUI validates it."""
    prompt = json_data.get("prompt") if isinstance(json_data, dict) else None
    if isinstance(prompt, dict):
        for line in migrate_prompt(prompt):
            log.info("InfiniteTalk: migrated a saved workflow: %s", line)
    return json_data


def register() -> bool:
    """Install :func:`on_prompt` on the running server once; False when no server runs (tests, scripts).

    Only looks at ``server`` when ComfyUI has already imported it (``main.py`` does before loading custom
    nodes), so importing the pack never starts anything.
    """
    server = sys.modules.get("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is None or not hasattr(instance, "add_on_prompt_handler"):
        return False
    handlers = getattr(instance, "on_prompt_handlers", None)
    if handlers is not None and any(
        getattr(h, "__qualname__", "") == on_prompt.__qualname__
        and getattr(h, "__module__", "") == on_prompt.__module__
        for h in handlers
    ):
        return True
    instance.add_on_prompt_handler(on_prompt)
    return True
