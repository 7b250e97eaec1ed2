"""The path boundary (infinitetalk.paths): names from prompts stay inside their roots; refusals touch no file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from infinitetalk import paths
from infinitetalk.errors import InputError

HOSTILE = [
    ("../evil.pth", "climbs out of its folder with '..'"),
    ("weights/../../../input/evil.pth", "climbs out of its folder with '..'"),
    ("a/../b.wav", "climbs out of its folder with '..'"),  # would normalise inside: refused all the same
    ("..\\..\\evil.pth", "climbs out of its folder with '..'"),
    ("/etc/passwd", "is an absolute path"),
    ("\\Windows\\win.ini", "is an absolute path"),
    ("C:\\Windows\\win.ini", "names a drive"),
    ("c:evil.wav", "names a drive"),
    ("\\\\server\\share\\evil.pth", "is a network (UNC) path"),
    ("//server/share/evil.pth", "is a network (UNC) path"),
    ("\\\\?\\C:\\evil.pth", "is a network (UNC) path"),
    ("clip.wav\x00.png", "holds a NUL byte"),
    ("", "is empty"),
    ("   ", "is empty"),
    ("./.", "names no file"),
    ("CON", "holds the device name 'CON'"),
    ("sub/nul.wav", "holds the device name 'nul.wav'"),
    ("x" * 2000, "characters long"),
]


@pytest.mark.parametrize(("name", "needle"), HOSTILE, ids=[repr(n)[:30] for n, _ in HOSTILE])
def test_hostile_names_are_refused_in_one_line_naming_the_input(name, needle):
    with pytest.raises(InputError) as err:
        paths.check_name(name, what="audio")
    message = str(err.value)
    assert needle in message and message.startswith("audio") and "\n" not in message


def test_non_text_is_refused():
    with pytest.raises(InputError, match="is not a file name"):
        paths.check_name(["a.wav"], what="audio")


@pytest.mark.parametrize(("name", "needle"), HOSTILE[:14], ids=[repr(n)[:30] for n, _ in HOSTILE[:14]])
def test_resolve_refuses_before_any_file_system_call(tmp_path, monkeypatch, name, needle):
    calls = []
    for fn in ("stat", "lstat", "open", "listdir", "scandir", "access"):
        real = getattr(os, fn)
        monkeypatch.setattr(os, fn, lambda *a, _r=real, _f=fn, **k: calls.append(_f) or _r(*a, **k))
    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        paths.resolve(name, [tmp_path], what="audio")
    monkeypatch.undo()
    assert calls == []


def test_plain_and_nested_names_resolve_in_the_first_root_holding_them(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "sub").mkdir(parents=True)
    (b / "sub").mkdir(parents=True)
    (b / "sub" / "x.wav").write_bytes(b"b")
    (a / "y.wav").write_bytes(b"a")
    assert paths.resolve("sub/x.wav", [a, b], what="audio") == b / "sub" / "x.wav"
    assert paths.resolve("./y.wav", [a, b], what="audio") == a / "y.wav"
    assert paths.resolve("sub\\x.wav", [a, b], what="audio") == b / "sub" / "x.wav"  # Windows separators
    with pytest.raises(InputError, match=r"audio 'z.wav' not found in the ComfyUI input folder \("):
        paths.resolve("z.wav", [a, b], what="audio", kind="ComfyUI input")
    assert paths.resolve("z.wav", [a, b], what="audio", must_exist=False) == a / "z.wav"
    with pytest.raises(InputError, match="no allowed folder"):
        paths.resolve("y.wav", [], what="audio")


def test_owner_symlinks_inside_a_root_are_followed_but_never_climbed(tmp_path):
    root, elsewhere = tmp_path / "models", tmp_path / "other_disk" / "models"
    root.mkdir()
    (elsewhere / "loras").mkdir(parents=True)
    (elsewhere / "loras" / "style.safetensors").write_bytes(b"w")
    (tmp_path / "other_disk" / "secret.pth").write_bytes(b"s")
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)  # the owner's link to another disk
    assert paths.resolve("linked/loras/style.safetensors", [root], what="lora").read_bytes() == b"w"
    # 'linked/..' normalises to the root lexically, but the system resolves it from the link's target:
    # other_disk/. A lexical check would pass this name; the boundary refuses every '..'.
    sneaky = "linked/../secret.pth"
    assert os.path.isfile(root / sneaky) and os.path.normpath(root / sneaky).startswith(str(root))
    with pytest.raises(InputError, match="climbs out of its folder"):
        paths.resolve(sneaky, [root], what="lora")


def test_join_and_within(tmp_path):
    assert paths.join(tmp_path, "a/b.json", what="x") == tmp_path / "a" / "b.json"
    assert paths.within(tmp_path / "a" / "b", tmp_path)
    assert not paths.within(tmp_path.parent / "x", tmp_path)
    assert not paths.within(Path(str(tmp_path) + "_sibling"), tmp_path)  # a prefix is not a parent
    with pytest.raises(InputError, match="climbs out"):
        paths.join(tmp_path, "../x", what="run folder")
