"""Run folders across versions: one written before the one run (fingerprint scheme 1) is refused in one line
when asked to resume, and nothing is written: a mixed video is never produced."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from infinitetalk.cli import main
from infinitetalk.errors import InputError
from infinitetalk.runs import FINGERPRINT_SCHEME, fingerprint_scheme, refuse_other_scheme


def _manifest(folder, fingerprint: str, complete: bool = False) -> dict:
    manifest = {"version": 1, "fingerprint": fingerprint, "complete": complete, "state": "state_00000.pt",
                "segments": [{"file": "segment_00000.mp4", "window": 0, "frames": 17, "sha256": None}]}  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def test_scheme_of_a_stored_fingerprint(tmp_path):
    assert fingerprint_scheme("ab" * 32) == 1  # a bare digest: written before the one run
    assert fingerprint_scheme("ab" * 32 + "-v2") == 2
    _manifest(tmp_path, "ab" * 32)
    with pytest.raises(InputError, match=r"written by an earlier version \(run fingerprint scheme 1, this version "
                       rf"writes {FINGERPRINT_SCHEME}\).*turn resume off") as err:  # fmt: skip
        refuse_other_scheme(tmp_path)
    assert "\n" not in str(err.value)
    _manifest(tmp_path, "cd" * 32 + f"-v{FINGERPRINT_SCHEME}")
    refuse_other_scheme(tmp_path)  # this scheme: the store's own check (same inputs?) decides
    refuse_other_scheme(tmp_path / "absent")  # nothing to resume: the run starts over


def test_cli_refuses_to_resume_a_folder_of_the_earlier_scheme(tiny_root, tmp_path, capsys):
    sr = 16000
    sf.write(
        tmp_path / "speech.wav", (0.3 * np.sin(np.arange(sr) / sr * 2 * np.pi * 200)).astype(np.float32), sr
    )
    yy, xx = np.mgrid[0:48, 0:64]
    Image.fromarray(np.stack([xx * 3, yy * 4, np.full_like(xx, 99)], -1).astype(np.uint8)).save(
        tmp_path / "f.png"
    )
    out = tmp_path / "talk.mp4"
    argv = ["--weights", str(tiny_root / "models"), "--input_path", str(tmp_path / "f.png"), "--audio_path",
            str(tmp_path / "speech.wav"), "--output_path", str(out), "--size", "32x32", "--sample_steps", "1",
            "--frame_num", "17", "--motion_frame", "5", "--max_frame_num", "25", "--keep_segments", "--no_live"]  # fmt: skip
    assert main(argv) == 0
    parts = tmp_path / "talk.mp4.parts"
    manifest = json.loads((parts / "manifest.json").read_text())
    assert fingerprint_scheme(manifest["fingerprint"]) == FINGERPRINT_SCHEME
    # the same folder as an earlier version left it: interrupted after its first window, a bare digest
    manifest.update(fingerprint=manifest["fingerprint"].rpartition("-v")[0], complete=False)
    manifest["segments"] = manifest["segments"][:1]
    (parts / "manifest.json").write_text(json.dumps(manifest))
    out.unlink()
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "it was written by an earlier version (run fingerprint scheme 1" in err and err.count("\n") == 1
    assert not out.exists() and not (tmp_path / "talk_partial.mp4").exists()  # nothing mixed was written
    assert json.loads((parts / "manifest.json").read_text()) == manifest  # the old folder is left as it was
