"""The nodes' side of the path boundary: loader entries, run folders from node ids, the Script node's checks."""

from __future__ import annotations

import importlib

import pytest

from .conftest import PACK_MODULE


@pytest.fixture(scope="module")
def common(pack):
    return importlib.import_module(f"{PACK_MODULE}.nodes._common")


@pytest.fixture(scope="module")
def runs(pack):
    return importlib.import_module(f"{PACK_MODULE}.nodes._runs")


def test_loader_entries_are_found_inside_the_model_folders_and_refused_outside(common, tiny_models, tmp_path):
    from infinitetalk.weights import Component

    vae = common.resolve_component(Component.VAE, "wan_2.1_vae.safetensors")
    assert vae == tiny_models / "models" / "vae" / "wan_2.1_vae.safetensors"
    official = common.resolve("vae", "weights/Wan2.1-I2V-14B-480P/Wan2.1_VAE.pth")
    assert official.is_file() and official.is_relative_to(tiny_models / "weights")
    outside = tmp_path / "evil.pth"
    outside.write_bytes(b"x")
    rel = "weights/" + "../" * 12 + str(outside).lstrip("/")
    for name, needle in [
        (rel, "climbs out of its folder"),
        (str(outside), "is an absolute path"),
        ("C:\\models\\evil.pth", "names a drive"),
        ("\\\\host\\share\\evil.pth", r"network \(UNC\) path"),
        ("vae\x00.safetensors", "NUL byte"),
    ]:
        with pytest.raises(ValueError, match=needle):
            common.resolve_component(Component.VAE, name)
    with pytest.raises(ValueError, match="climbs out"):
        common.resolve("vae", rel)


def test_media_files_stay_in_their_folder(common, comfy, tmp_path):
    from pathlib import Path

    inp = Path(comfy.get_input_directory())
    (inp / "sub").mkdir(exist_ok=True)
    (inp / "sub" / "a.wav").write_bytes(b"x")
    (Path(comfy.get_output_directory()) / "b.wav").write_bytes(b"y")
    assert common.media_file("sub/a.wav", "audio") == inp / "sub" / "a.wav"
    assert common.media_file("b.wav [output]", "audio").read_bytes() == b"y"
    with pytest.raises(ValueError, match=r"audio '../b.wav \[output\]' climbs out"):
        common.media_file("../b.wav [output]", "audio")


@pytest.mark.parametrize(
    ("node_id", "folder"),
    [("12", "12_"), ("5:3", "5-3_"), ("Load Audio", "id-"), ("sampler", "sampler_")],
)
def test_run_folders_from_plain_ids_or_a_hash(runs, node_id, folder):
    name = runs.folder_name(node_id, "f" * 64)
    assert name.startswith(folder) and name.endswith("_" + "f" * 16) and "/" not in name and ":" not in name
    runs.check_node_id(node_id)


@pytest.mark.parametrize("node_id", ["../../escape", "a/b", "..\\x", "x\x00", "a" * 300])
def test_a_node_id_that_reads_like_a_path_is_refused(runs, node_id):
    with pytest.raises(ValueError, match="reads like a path: give the node a plain id"):
        runs.check_node_id(node_id)
    assert "/" not in runs.folder_name(node_id, "0" * 64)  # hashed anyway, had anyone skipped the check


def test_script_node_refuses_paths_out_and_voice_files_at_queue_time(nodes):
    script = nodes["InfiniteTalkScript"]
    assert script.validate_inputs("[S1] Hello.", "af_heart", "am_adam") is True
    assert "climbs out of its folder" in script.validate_inputs(
        "[S1] audio: ../../x.wav", "af_heart", "af_heart"
    )
    assert "is an absolute path" in script.validate_inputs(
        "voice 1: /x/evil.pt\n[S1] Hi.", "af_heart", "af_heart"
    )
    assert "voice_2 '../evil' climbs out" in script.validate_inputs("[S1] Hi.", "af_heart", "../evil")
    assert "characters long" in script.validate_inputs("[S1] Hi.\n" * 30_000, "af_heart", "af_heart")


def test_caches_keyed_by_prompt_text_stay_bounded(pack):
    migrate = importlib.import_module(f"{PACK_MODULE}.nodes._migrate")
    migrate.widget_defaults("InfiniteTalkSampler")
    before = dict(migrate._DEFAULTS)
    for i in range(200):  # class types are prompt text: unknown ones are answered, not remembered
        assert migrate.widget_defaults(f"InfiniteTalkNoSuchNode{i}") == {}
    assert migrate._DEFAULTS == before and any(k[0] == "InfiniteTalkSampler" for k in before)
