"""The one place the pack imports ComfyUI's node API (``comfy_api``).

ComfyUI's developers ask custom nodes to import a *versioned* API (``comfy_api.v0_0_2``) instead of
``comfy_api.latest``, whose contents move between releases. The pack takes the first of
:data:`VERSIONS` that imports and offers everything the pack uses (:data:`REQUIRED`); ``latest`` is the
last resort (a ComfyUI that has dropped or not yet shipped the versioned module). Every node file imports
``io``, ``ui``, ``ComfyExtension`` and ``InputImpl`` from here, never from ``comfy_api`` itself
(tests/unit/test_architecture.py-style check: ``tests/nodes/test_api.py``).

Optional features (``io.DynamicCombo``, the ``advanced`` input flag) are detected on the objects in
``nodes/_widgets.py``, never from a version number.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

log = logging.getLogger(__name__)

VERSIONS = ("comfy_api.v0_0_2", "comfy_api.latest")

# what the pack's nodes use; a module lacking any of them is skipped for the next one
REQUIRED = {
    "io": (
        "ComfyNode",
        "Schema",
        "NodeOutput",
        "Custom",
        "MultiType",
        "Hidden",
        "Combo",
        "Int",
        "Float",
        "String",
        "Boolean",
        "Image",
        "Mask",
        "Audio",
        "Video",
    ),  # fmt: skip
    "ui": ("PreviewImage", "PreviewText", "PreviewVideo", "SavedResult"),
}


def missing(module: ModuleType) -> list[str]:
    """The names of :data:`REQUIRED` (plus ``ComfyExtension`` and ``InputImpl``) that ``module`` lacks."""
    gaps = [name for name in ("io", "ui", "ComfyExtension", "InputImpl") if not hasattr(module, name)]
    for part, names in REQUIRED.items():
        ns = getattr(module, part, None)
        if ns is not None:
            gaps += [f"{part}.{name}" for name in names if not hasattr(ns, name)]
    return gaps


def resolve(versions: tuple[str, ...] = VERSIONS) -> ModuleType:
    """The first module of ``versions`` that imports and has everything the pack uses.

    Raises:
        ImportError: none fits (one line naming what each lacked and the fix).
    """
    problems = []
    for name in versions:
        try:
            module = importlib.import_module(name)
        except ImportError as err:
            problems.append(f"{name}: {err}")
            continue
        gaps = missing(module)
        if not gaps:
            return module
        problems.append(f"{name} lacks {', '.join(gaps)}")
    raise ImportError(
        "ComfyUI-InfiniteTalk needs ComfyUI's node API (comfy_api, ComfyUI >= 0.3.75): "
        + "; ".join(problems)
        + "; update ComfyUI"
    )


API = resolve()
VERSION = API.__name__
io = API.io
ui = API.ui
ComfyExtension = API.ComfyExtension
InputImpl = API.InputImpl

__all__ = ["API", "VERSION", "ComfyExtension", "InputImpl", "io", "ui", "resolve", "missing"]
