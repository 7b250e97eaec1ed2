"""Host memory of the audio features over long audio: the copying path before vs the buffer/spill path now.

    python bench/long_audio.py                          # tiny wav2vec2, 10 and 30 minutes
    python bench/long_audio.py --minutes 1 --model base # the real base size (12 x 768), random weights

For each length and path a fresh child process builds wav2vec2 (``tiny``: the test checkpoint, 3 x 96;
``base``: chinese-wav2vec2-base's config, 12 x 768, random weights, which is slow on a CPU: its attention
over the whole clip is quadratic), makes synthetic speech-like audio (a voiced harmonic tone with a
syllable envelope and noise), then runs the audio stages of a run and reports per stage the peak resident
memory (VmHWM, reset between stages through ``/proc/self/clear_refs``) above what was resident before the
stage, and what stays resident after it (anonymous memory, and file/shared pages of a spill file, which the
kernel can drop):

1. encode: ``old`` collects one tensor per layer and concatenates, then stacks the speakers;
   ``new`` writes every layer into one preallocated ``(S, L, layers, C)`` buffer (file-backed above the
   spill threshold). Both include the encoder's own activations over the whole clip (global attention);
2. prepare: ``old`` pads with ``torch.cat`` and casts the run to bf16, then fingerprints ``tobytes()``;
   ``new`` does neither copy and fingerprints in 64 MB chunks;
3. sampling: every window's audio input (81 frames, stride 72) read and cast to bf16, as the sampler does.

The parent prints one table; 36 KB per frame per speaker is what the features weigh in float32 at base size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import hashlib, json, os, sys, time
import numpy as np, torch
from pathlib import Path
sys.path.insert(0, {root!r})
from infinitetalk import spill
from infinitetalk.pipeline import _hash_tensor
from infinitetalk.windows import audio_window, padded_audio_length, plan_windows

torch.set_num_threads({threads})
path, minutes, model_name = {path!r}, {minutes}, {model!r}

def status():
    fields = {{}}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                fields[key] = int(value.split()[0]) / 1024  # MiB
    return fields

def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

stages = {{}}
def stage(name, fn):
    before = status()
    reset_peak()
    t0 = time.perf_counter()
    out = fn()
    after = status()
    stages[name] = dict(peak=after["VmHWM"] - before["VmRSS"], anon=after["RssAnon"],
                        file=after["RssFile"] + after["RssShmem"], seconds=time.perf_counter() - t0)
    return out

if model_name == "tiny":
    from infinitetalk.encoders import load_audio_encoder
    from infinitetalk.tiny.encoders import write_wav2vec2
    encoder = load_audio_encoder(write_wav2vec2(Path({tmp!r}) / "w2v", 3)["wav2vec2_dir"])
else:
    from transformers import Wav2Vec2Config, Wav2Vec2Model
    from infinitetalk.encoders.wav2vec2 import AudioEncoder
    torch.manual_seed(0)
    cfg = Wav2Vec2Config(apply_spec_augment=False, mask_time_prob=0.0)  # the base size: 12 x 768
    encoder = AudioEncoder(Wav2Vec2Model(cfg).eval(), do_normalize=False)
attention = getattr(encoder.model.config, "_attn_implementation", None)

sr = 16000
t = np.arange(int(minutes * 60 * sr), dtype=np.float64) / sr
syllables = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
wave = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((130, 260, 390, 700), 1)) * syllables
wave = (0.2 * wave + 0.01 * np.random.default_rng(0).standard_normal(len(t))).astype(np.float32)
del t, syllables

@torch.no_grad()
def encode_old():  # the code this change replaced: list of layers, cat, then stack of speakers
    from infinitetalk.encoders.wav2vec2 import conv_features, linear_interpolation, num_video_frames
    x = torch.from_numpy(wave)[None]
    feats = conv_features(encoder.model.feature_extractor, x, encoder.chunk_frames).transpose(1, 2)
    feats = linear_interpolation(feats.float(), num_video_frames(len(wave)))
    hidden = encoder.model.feature_projection(feats)
    hidden = hidden[0] if isinstance(hidden, tuple) else hidden
    enc = encoder.model.encoder
    hidden = enc.layer_norm(hidden + enc.pos_conv_embed(hidden))
    outputs = []
    for layer in enc.layers:
        out = layer(hidden, attention_mask=None)
        hidden = out[0] if isinstance(out, tuple) else out
        outputs.append(hidden)
    del hidden, out, feats, x
    per_speaker = torch.cat(outputs, dim=0).transpose(0, 1).float().cpu()
    del outputs
    return torch.stack([per_speaker])

def encode_new():
    buffer = spill.empty_tensor((1, *encoder.feature_shape(len(wave))), torch.float32, {spill_dir!r})
    encoder.encode(wave, out=buffer[0])
    return buffer

features = stage("encode", encode_old if path == "old" else encode_new)
length = features.shape[1]
plans, _ = plan_windows(length, 81, 9, "streaming")
end = plans[-1].start + 81

def prepare_old():
    padded = torch.cat([features, features[:, -(end - length + 3):].flip(1)], 1) if end >= length else features
    run = padded.to(torch.bfloat16)
    h = hashlib.sha256()
    h.update(features.contiguous().view(torch.uint8).numpy().tobytes())
    return run, h.hexdigest()

def prepare_new():
    h = hashlib.sha256()
    _hash_tensor(h, features)
    return features, h.hexdigest()

run, digest = stage("prepare", prepare_old if path == "old" else prepare_new)
# the old run held both: the embedding's float32 features and the padded bf16 copy of the run

def sampling():
    total = 0.0
    for p in plans:
        if path == "old":
            centres = (torch.arange(p.start, p.start + 81)[:, None] + torch.arange(-2, 3)).clamp(0, run.shape[1] - 1)
            win = run[:, centres].to(torch.bfloat16)
        else:
            win = audio_window(run, p.start, 81, padded_audio_length(length, end)).to(torch.bfloat16)
        total += float(win[..., :1].float().sum())
    return total

check = stage("sampling", sampling)
print(json.dumps(dict(path=path, minutes=minutes, frames=length, layers=encoder.config.num_layers,
                      hidden=encoder.config.hidden_size, attention=attention, spilled=spill.is_file_backed(run),
                      check=round(check, 3), stages=stages)))
"""


def run_child(path: str, minutes: float, model: str, threads: int, spill_dir: str, tmp: str) -> dict:
    code = CHILD.format(
        root=str(ROOT), path=path, minutes=minutes, model=model, threads=threads, spill_dir=spill_dir, tmp=tmp
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{path} {minutes} min failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[10.0, 30.0])
    ap.add_argument("--model", choices=("tiny", "base"), default="tiny")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--spill-dir", default=None, help="spill folder (default: a temporary folder on disk)")
    ap.add_argument("--spill-mb", type=float, default=None, help="spill threshold (default: the pack's, 256)")
    args = ap.parse_args()
    if args.spill_mb is not None:
        os.environ["INFINITETALK_SPILL_MB"] = str(args.spill_mb)
    with tempfile.TemporaryDirectory(dir=ROOT / ".cache" if (ROOT / ".cache").is_dir() else None) as tmp:
        spill_dir = args.spill_dir or str(Path(tmp) / "spill")
        rows = [
            run_child(path, minutes, args.model, args.threads, spill_dir, tmp)
            for minutes in args.minutes
            for path in ("old", "new")
        ]
    first = rows[0]
    print(
        f"wav2vec2 {args.model} ({first['layers']} layers x {first['hidden']}, attention {first['attention']}), "
        f"one speaker, spill threshold {os.environ.get('INFINITETALK_SPILL_MB', '256')} MiB; figures in MiB"
    )
    print(
        f"{'min':>5} {'path':>4} {'frames':>7} | {'encode peak':>11} {'anon after':>10} | "
        f"{'prepare peak':>12} | {'sampling peak':>13} {'anon':>6} {'file':>6} | spilled  s(encode)"
    )
    for r in rows:
        e, p, s = r["stages"]["encode"], r["stages"]["prepare"], r["stages"]["sampling"]
        print(
            f"{r['minutes']:5.0f} {r['path']:>4} {r['frames']:7d} | {e['peak']:11.0f} {e['anon']:10.0f} | "
            f"{p['peak']:12.0f} | {s['peak']:13.0f} {s['anon']:6.0f} {s['file']:6.0f} | "
            f"{str(r['spilled']):7s} {e['seconds']:6.1f}"
        )
    checks = {(r["minutes"], r["path"]): r["check"] for r in rows}
    for minutes in args.minutes:
        same = checks[(minutes, "old")] == checks[(minutes, "new")]
        print(f"{minutes:5.0f} min: sampled windows agree old vs new: {same}")


if __name__ == "__main__":
    main()
