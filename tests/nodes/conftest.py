"""Fixtures for calling the pack's nodes directly, in-process, with the provisioned ComfyUI importable.

``pack``: the repository imported as a ComfyUI custom-node package (as ComfyUI itself imports it), with
ComfyUI 0.3.75 from ``.comfyui/`` appended to ``sys.path`` (provisioned on first use), ``--cpu``
semantics, and ComfyUI's model folders pointed at the tiny checkpoints when ``tiny_models`` is used.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from tests.integration.harness import REPO, ensure_comfyui

from ..expected import MODEL_FOLDERS

PACK_MODULE = "ComfyUI_InfiniteTalk_under_test"


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    """ComfyUI importable in this process (appended to sys.path, so installed packages win)."""
    comfy_dir = ensure_comfyui()
    if str(comfy_dir) not in sys.path:
        sys.path.append(str(comfy_dir))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import folder_paths

    base = tmp_path_factory.mktemp("comfy_dirs")
    for name, setter in (
        ("input", folder_paths.set_input_directory),
        ("output", folder_paths.set_output_directory),
        ("temp", folder_paths.set_temp_directory),
    ):
        (base / name).mkdir()
        setter(str(base / name))
    return folder_paths


@pytest.fixture(scope="session")
def pack(comfy):
    """The repository loaded the way ComfyUI loads a custom node package."""
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    spec = importlib.util.spec_from_file_location(
        PACK_MODULE, REPO / "__init__.py", submodule_search_locations=[str(REPO)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    spec.loader.exec_module(module)
    import importlib as il

    il.import_module(f"{PACK_MODULE}.nodes")._common.register_folders()
    return module


@pytest.fixture(scope="session")
def nodes(pack):
    """Name -> node class, from the pack's ComfyExtension (what ComfyUI registers)."""
    import asyncio

    extension = asyncio.run(pack.comfy_entrypoint())
    node_list = asyncio.run(extension.get_node_list())
    return {cls.GET_SCHEMA().node_id: cls for cls in node_list}


@pytest.fixture(scope="session")
def tiny_models(comfy, request) -> Path:
    """Tiny checkpoints registered in ComfyUI's model folders (INFINITETALK_TINY_DIR or a fresh set)."""
    env = os.environ.get("INFINITETALK_TINY_DIR")
    root = (
        Path(env).resolve()
        if env and (Path(env) / "models").is_dir()
        else request.getfixturevalue("tiny_root")
    )
    for folder in MODEL_FOLDERS:
        comfy.add_model_folder_path(folder, str(root / "models" / folder))
    comfy.add_model_folder_path("infinitetalk_weights", str(root / "weights"))
    return root
