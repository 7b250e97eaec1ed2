"""Write the sample inputs the example workflows name into a ComfyUI input folder (idempotent).

Usage: python scripts/make_example_inputs.py COMFYUI_INPUT_DIR

- ``infinitetalk_portrait.png``: one person (scikit-image's astronaut photo when installed, else a drawn face);
- ``infinitetalk_two_people.png``: two people side by side;
- ``infinitetalk_speech.wav``: 4 s of synthetic voiced sound (not words), 44.1 kHz stereo 16-bit like a
  studio recording (the output video must keep it so);
- ``infinitetalk_speech_2.wav``: the same for a second voice, 24 kHz mono;
- ``infinitetalk_source.mp4``: a 3 s, 25 fps clip of the portrait (source video for dubbing);
- ``infinitetalk_portrait_rgba.png``: the portrait roughly cut out (head and shoulders, transparent around
  them), standing in for a background remover's result: Load Image gives its alpha as a MASK;
- ``infinitetalk_slide.png``: a 640x360 presentation slide (title bar, bullet lines) for the presenter.

Replace them with your own photo, recording and video for real results.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile
from PIL import Image, ImageDraw

SR = 24000


def portrait(size: int = 512) -> Image.Image:
    try:
        from skimage import data

        return Image.fromarray(data.astronaut()).resize((size, size), Image.LANCZOS)
    except ImportError:
        img = Image.new("RGB", (size, size), (70, 90, 120))
        d = ImageDraw.Draw(img)
        s = size / 512
        d.ellipse([150 * s, 90 * s, 362 * s, 350 * s], fill=(225, 185, 160))
        d.ellipse([200 * s, 180 * s, 235 * s, 205 * s], fill=(40, 40, 40))
        d.ellipse([277 * s, 180 * s, 312 * s, 205 * s], fill=(40, 40, 40))
        d.rectangle([225 * s, 280 * s, 287 * s, 295 * s], fill=(150, 60, 60))
        d.rectangle([120 * s, 350 * s, 392 * s, 512 * s], fill=(30, 60, 140))
        return img


def speech_like(seconds: float, f0: float, seed: int, sr: int = SR) -> np.ndarray:
    """Voiced, syllable-rate modulated harmonics: loud enough for loudness normalisation."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)), 0, None) ** 0.5
    wave = 0.25 * voice * syllables + 0.005 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


def studio_recording(path: Path, sr: int = 44100) -> None:
    """Stereo 16-bit: the voice slightly right of centre, with a touch of air above 8 kHz."""
    voice = speech_like(4.0, 140.0, 0, sr)
    t = np.arange(voice.size) / sr
    air = 0.01 * np.sin(2 * np.pi * 10000 * t)
    stereo = np.stack([0.8 * voice + air, voice + air], axis=1)
    soundfile.write(path, stereo, sr, subtype="PCM_16")


def write_video(path: Path, image: Image.Image, seconds: float = 3.0, fps: int = 25) -> None:
    frames = int(seconds * fps)
    base = np.asarray(image.resize((256, 256)))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps, 1))
        stream.width, stream.height, stream.pix_fmt = 256, 256, "yuv420p"
        for i in range(frames):
            shift = int(4 * np.sin(2 * np.pi * i / frames))
            frame = np.roll(base, shift, axis=1)
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            ):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    dest = Path(argv[0])
    dest.mkdir(parents=True, exist_ok=True)
    person = portrait()
    targets = {
        "infinitetalk_portrait.png": lambda p: person.save(p),
        "infinitetalk_two_people.png": lambda p: _two_people(person).save(p),
        "infinitetalk_speech.wav": studio_recording,
        "infinitetalk_speech_2.wav": lambda p: soundfile.write(p, speech_like(4.0, 210.0, 1), SR),
        "infinitetalk_source.mp4": lambda p: write_video(p, person),
        "infinitetalk_portrait_rgba.png": lambda p: cut_out(person).save(p),
        "infinitetalk_slide.png": lambda p: slide().save(p),
    }
    for name, write in targets.items():
        path = dest / name
        if not path.exists():
            write(path)
            print(f"wrote {path}")
    return 0


def cut_out(person: Image.Image) -> Image.Image:
    """The portrait with a head-and-shoulders alpha (anti-aliased: drawn at 4x, then downscaled)."""
    w, h = person.size
    big = Image.new("L", (4 * w, 4 * h), 0)
    d = ImageDraw.Draw(big)
    d.ellipse([4 * 0.3 * w, 4 * 0.08 * h, 4 * 0.7 * w, 4 * 0.62 * h], fill=255)  # head and hair
    d.rounded_rectangle(
        [4 * 0.12 * w, 4 * 0.55 * h, 4 * 0.88 * w, 4 * 1.1 * h], radius=4 * 0.15 * w, fill=255
    )
    rgba = person.convert("RGBA")
    rgba.putalpha(big.resize((w, h), Image.LANCZOS))
    return rgba


def slide(width: int = 640, height: int = 360) -> Image.Image:
    img = Image.new("RGB", (width, height), (245, 246, 250))
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, width, height // 6], fill=(32, 64, 128))
    d.text((24, height // 18), "Quarterly review", fill=(255, 255, 255))
    for k in range(4):
        y = height // 4 + k * height // 9
        d.ellipse([28, y + 4, 38, y + 14], fill=(32, 64, 128))
        d.rectangle([52, y + 6, 52 + (k % 3 + 2) * width // 12, y + 12], fill=(120, 130, 150))
    return img


def _two_people(person: Image.Image) -> Image.Image:
    pair = Image.new("RGB", (person.width * 2, person.height))
    pair.paste(person, (0, 0))
    pair.paste(person.transpose(Image.FLIP_LEFT_RIGHT), (person.width, 0))
    return pair


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
