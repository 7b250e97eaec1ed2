"""infinitetalk.weights is the one list of file names: renaming one published file there is the only edit
needed for tiny/, the hub list, the command line's discovery and the loader nodes to follow (issue #8);
and the InfiniteTalk Doctor node shows the doctor's report."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from infinitetalk import weights
from infinitetalk.errors import CheckpointError
from infinitetalk.hub import plan
from infinitetalk.loading import discover
from infinitetalk.tiny import encoders as tiny_encoders
from infinitetalk.weights import Component
from tests.nodes.conftest import PACK_MODULE

NEW_NAME = "renamed_wan21_vae_fp16.safetensors"


@pytest.fixture()
def renamed_vae(monkeypatch, pack):
    """The one edit: the published name of ComfyUI's VAE file in the registry (made in both loaded copies
    of the module: the library's, and the pack's as ComfyUI imports it)."""
    old = weights.spec(Component.VAE).published("comfy").name
    for module in (weights, sys.modules[f"{PACK_MODULE}.infinitetalk.weights"]):
        vae = module.Component.VAE
        spec = module.SPECS[vae]
        files = tuple(dataclasses.replace(f, name=NEW_NAME) if f.key == "comfy" else f for f in spec.files)
        monkeypatch.setitem(module.SPECS, vae, dataclasses.replace(spec, files=files))
    return old


@pytest.fixture()
def extra_models(comfy, tmp_path):
    """Register a models/ tree with ComfyUI's folder_paths for one test, and remove it afterwards."""
    added = []

    def register(models):
        for folder in ("vae", "text_encoders", "clip_vision", "audio_encoders"):
            comfy.add_model_folder_path(folder, str(models / folder))
            added.append((folder, str(models / folder)))

    yield register
    for folder, path in added:
        comfy.folder_names_and_paths[folder][0].remove(path)


def test_one_name_change_is_the_only_edit(renamed_vae, tmp_path, nodes, extra_models):
    old_name = renamed_vae
    # tiny/ writes the file under the new name
    written = tiny_encoders.write_vae(tmp_path, seed=0)
    assert written["vae_safetensors"] == tmp_path / "models" / "vae" / NEW_NAME
    assert (tmp_path / "models" / "vae" / NEW_NAME).is_file()
    assert not (tmp_path / "models" / "vae" / old_name).exists()
    # the hub downloads it under the new name (same source folder)
    (item,) = plan("comfyui", only=["vae"])
    assert item.dest == f"vae/{NEW_NAME}" and item.filename == f"split_files/vae/{NEW_NAME}"
    # the command line's discovery prefers it, and names it when it is missing
    models = tmp_path / "models"
    found, _ = discover.inventory(discover.search_paths_for(models))
    assert [f.display for f in discover.candidates(found, Component.VAE)][0] == NEW_NAME
    with pytest.raises(CheckpointError, match=f"'models/vae/{NEW_NAME}'"):
        discover.pick([], Component.VAE, "'nowhere'")
    # the loader node lists it first and loads it
    extra_models(models)
    options = nodes["InfiniteTalkVAELoader"].INPUT_TYPES()["required"]["name"][1]["options"]
    comfy_files = [
        o for o in options if not o.startswith("weights/")
    ]  # official trees other tests registered
    assert comfy_files[0] == NEW_NAME, options
    if (
        old_name in comfy_files
    ):  # a file still named the old way (another test's tiny tree): now an unknown name
        assert comfy_files[-1] == old_name, options
    vae = nodes["InfiniteTalkVAELoader"].execute(NEW_NAME, "fp32").args[0]
    assert vae.source == str(models / "vae" / NEW_NAME)


def test_doctor_node_reports_ready_on_the_tiny_models(nodes, tiny_models):
    node = nodes["InfiniteTalkDoctor"]
    schema = node.GET_SCHEMA()
    assert schema.category == "InfiniteTalk/loaders" and schema.is_output_node
    out = node.execute(speakers=1)
    text = out.result[0]
    assert text.splitlines()[-1] == "ready", text
    assert out.ui.as_dict() == {"text": (text,)}
    assert "adapter fits the DiT" in text and "device: cpu" in text
    two = node.execute(speakers=2).result[0]
    assert "adapter_multi" in two and two.splitlines()[-1] == "ready"
