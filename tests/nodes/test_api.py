"""The node API comes from one module (nodes/_api.py), from a versioned ``comfy_api`` with a fallback."""

from __future__ import annotations

import ast
import importlib
import sys
import types

import pytest

from tests.integration.harness import REPO

from .conftest import PACK_MODULE


def _comfy_api_imports(path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("comfy_api"):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("comfy_api")]
    return found


def test_only_the_api_module_imports_comfy_api():
    offenders = {
        p.name: _comfy_api_imports(p)
        for p in sorted((REPO / "nodes").glob("*.py"))
        if p.name != "_api.py" and _comfy_api_imports(p)
    }
    assert offenders == {}


def test_the_versioned_api_is_used_on_comfyui_0_3_75(pack):
    api = importlib.import_module(f"{PACK_MODULE}.nodes._api")
    assert api.VERSION == "comfy_api.v0_0_2"
    assert api.missing(api.API) == []
    sampler = importlib.import_module(f"{PACK_MODULE}.nodes.sampler")
    assert sampler.io is api.io and sampler.ui is api.ui


def test_a_version_lacking_a_feature_falls_back_to_the_next(pack, monkeypatch):
    api = importlib.import_module(f"{PACK_MODULE}.nodes._api")
    latest = importlib.import_module("comfy_api.latest")
    crippled = types.ModuleType("comfy_api.v9_9_9")
    crippled.io = types.SimpleNamespace(
        **{k: getattr(latest.io, k) for k in api.REQUIRED["io"] if k != "MultiType"}
    )
    crippled.ui, crippled.ComfyExtension, crippled.InputImpl = (
        latest.ui,
        latest.ComfyExtension,
        latest.InputImpl,
    )
    monkeypatch.setitem(sys.modules, "comfy_api.v9_9_9", crippled)
    assert api.missing(crippled) == ["io.MultiType"]
    assert api.resolve(("comfy_api.v9_9_9", "comfy_api.latest")) is latest


def test_no_usable_api_is_one_clear_error(pack):
    api = importlib.import_module(f"{PACK_MODULE}.nodes._api")
    with pytest.raises(ImportError, match=r"comfy_api\.v0_0_0_absent: .*update ComfyUI"):
        api.resolve(("comfy_api.v0_0_0_absent",))
