"""Regenerate example_workflows/*.json (UI format) and example_workflows/api/*_api.json (API format).

The graphs are built by the real ComfyUI front end (headless Chromium): nodes are created with LiteGraph,
widgets set by name and sockets linked by name, then ``app.graph.serialize()`` gives the UI file and
``app.graphToPrompt()`` its API twin. So both files are exactly what the editor itself would save.

Usage (maintainers, after changing nodes or the specs below; needs chromium + chromedriver):

    python scripts/make_workflows.py            # all of them
    python scripts/make_workflows.py NAME ...   # only these
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

OUT = REPO / "example_workflows"

DIT = "wan2.1_i2v_480p_14B_fp16.safetensors"
SINGLE = "wan2.1_infiniteTalk_single_fp16.safetensors"
MULTI = "wan2.1_infiniteTalk_multi_fp16.safetensors"
PROMPT = (
    "A woman is talking to the camera in a bright studio, natural head movement and expressions, "
    "sharp focus on the face."
)


def loaders(adapter: str) -> dict:
    return {
        "model": (
            "InfiniteTalkModelLoader",
            (0, 0),
            {"dit": DIT, "adapter": adapter, "quantization": "fp8_e4m3fn"},
        ),
        "text_encoder": ("InfiniteTalkTextEncoderLoader", (0, 260), {"name": "umt5_xxl_fp16.safetensors"}),
        "clip_vision": ("InfiniteTalkClipVisionLoader", (0, 390), {"name": "clip_vision_h.safetensors"}),
        "vae": ("InfiniteTalkVAELoader", (0, 520), {"name": "wan_2.1_vae.safetensors"}),
    }


def audio_encoder(pos=(0, 650)) -> tuple:
    return ("InfiniteTalkAudioEncoderLoader", pos, {"name": "wav2vec2-chinese-base_fp16.safetensors"})


def sampler(widgets: dict | None = None) -> tuple:
    return (
        "InfiniteTalkSampler",
        (820, 0),
        {"seed": 42, "control_after_generate": "fixed", **(widgets or {})},
    )


def sampler_options(widgets: dict | None = None, pos=(1250, 1040)) -> tuple:
    """The expert knobs (reference defaults), shown so users find them; the sampler works without it."""
    return ("InfiniteTalkSamplerOptions", pos, dict(widgets or {}))


COMMON_LINKS = [
    ("model", "model", "sampler", "model"),
    ("vae", "vae", "sampler", "vae"),
    ("clip_vision", "clip_vision", "sampler", "clip_vision"),
    ("text_encoder", "text_encoder", "encode", "text_encoder"),
    ("encode", "text_embeds", "sampler", "text_embeds"),
    ("embed", "audio_embeds", "sampler", "audio_embeds"),
    ("options", "options", "sampler", "options"),
]

WORKFLOWS = {
    "infinitetalk_image_to_video": {
        "note": "Image to video: one portrait + one speech recording -> a talking video as long as the audio.\n"
        "Put your photo and audio in ComfyUI's input folder (or upload them in the Load nodes).\n"
        "Weights: see the pack's README (models/diffusion_models, model_patches, text_encoders, "
        "clip_vision, vae, audio_encoders).",
        "nodes": {
            **loaders(SINGLE),
            "audio_encoder": audio_encoder(),
            "image": ("LoadImage", (420, 420), {"image": "infinitetalk_portrait.png"}),
            "audio": ("InfiniteTalkLoadAudio", (0, 780), {"audio": "infinitetalk_speech.wav"}),
            "embed": ("InfiniteTalkAudioEmbed", (420, 250), {}),
            "encode": ("InfiniteTalkTextEncode", (420, 0), {"prompt": PROMPT}),
            "sampler": sampler(),
            "options": sampler_options(),
            "combine": (
                "InfiniteTalkVideoCombine",
                (1250, 0),
                {"filename_prefix": "InfiniteTalk/image_to_video"},
            ),
        },
        "links": COMMON_LINKS
        + [
            ("audio_encoder", "audio_encoder", "embed", "audio_encoder"),
            ("audio", "audio", "embed", "audio_1"),
            ("image", "IMAGE", "sampler", "image"),
            ("sampler", "frames", "combine", "frames"),
        ],
    },
    "infinitetalk_video_dubbing": {
        "note": "Video to video (dubbing): a source video + new speech -> the same scene, lips following the new "
        "audio. Each 81-frame window takes its reference frame from the source video.",
        "nodes": {
            **loaders(SINGLE),
            "audio_encoder": audio_encoder(),
            "video": ("LoadVideo", (420, 420), {"file": "infinitetalk_source.mp4"}),
            "audio": ("InfiniteTalkLoadAudio", (0, 780), {"audio": "infinitetalk_speech.wav"}),
            "embed": ("InfiniteTalkAudioEmbed", (420, 250), {}),
            "encode": ("InfiniteTalkTextEncode", (420, 0), {"prompt": PROMPT}),
            "sampler": sampler(),
            "options": sampler_options(),
            "combine": ("InfiniteTalkVideoCombine", (1250, 0), {"filename_prefix": "InfiniteTalk/dubbing"}),
        },
        "links": COMMON_LINKS
        + [
            ("audio_encoder", "audio_encoder", "embed", "audio_encoder"),
            ("audio", "audio", "embed", "audio_1"),
            ("video", "VIDEO", "sampler", "video"),
            ("sampler", "frames", "combine", "frames"),
        ],
    },
    "infinitetalk_tts_to_video": {
        "note": "Text to speech to video: Kokoro says the text, InfiniteTalk animates the portrait, and the "
        "captions are burnt into the video. Kokoro files go in models/kokoro/ (config.json, "
        "kokoro-v1_0.pth, voices/).",
        "nodes": {
            **loaders(SINGLE),
            "audio_encoder": audio_encoder(),
            "kokoro": ("InfiniteTalkKokoroLoader", (0, 780), {"name": "kokoro-v1_0.pth"}),
            "tts": ("InfiniteTalkTTS", (0, 900), {}),
            "image": ("LoadImage", (420, 420), {"image": "infinitetalk_portrait.png"}),
            "embed": ("InfiniteTalkAudioEmbed", (420, 250), {"normalize_loudness": False}),
            "encode": ("InfiniteTalkTextEncode", (420, 0), {"prompt": PROMPT}),
            "sampler": sampler(),
            "options": sampler_options(),
            "combine": (
                "InfiniteTalkVideoCombine",
                (1250, 0),
                {"captions": "burn-in", "filename_prefix": "InfiniteTalk/tts"},
            ),
        },
        "links": COMMON_LINKS
        + [
            ("audio_encoder", "audio_encoder", "embed", "audio_encoder"),
            ("kokoro", "kokoro", "tts", "kokoro"),
            ("tts", "audio", "embed", "audio_1"),
            ("image", "IMAGE", "sampler", "image"),
            ("sampler", "frames", "combine", "frames"),
            ("tts", "srt", "combine", "srt"),
        ],
    },
    "infinitetalk_two_person_dialogue": {
        "note": "Two-person dialogue: Kokoro speaks '(s1) ... (s2) ...' with two voices; the multi-speaker "
        "adapter animates the left person with speaker 1 and the right person with speaker 2 (para "
        "mode). Captions go in a subtitle track. The sampler finds the two faces itself (person 1 = left, "
        "shown on the node); set speaker_boxes on InfiniteTalk Sampler Options or connect speaker_masks "
        "when a face is not found.",
        "nodes": {
            **loaders(MULTI),
            "audio_encoder": audio_encoder(),
            "kokoro": ("InfiniteTalkKokoroLoader", (0, 780), {"name": "kokoro-v1_0.pth"}),
            "tts": ("InfiniteTalkDialogueTTS", (0, 900), {}),
            "image": ("LoadImage", (420, 420), {"image": "infinitetalk_two_people.png"}),
            "embed": ("InfiniteTalkAudioEmbed", (420, 250), {"normalize_loudness": False, "mode": "para"}),
            "encode": (
                "InfiniteTalkTextEncode",
                (420, 0),
                {"prompt": "Two people are having a friendly conversation at a table, natural gestures."},
            ),
            "sampler": sampler(),
            "options": sampler_options(),
            "combine": (
                "InfiniteTalkVideoCombine",
                (1250, 0),
                {"captions": "subtitle track", "filename_prefix": "InfiniteTalk/dialogue"},
            ),
        },
        "links": COMMON_LINKS
        + [
            ("audio_encoder", "audio_encoder", "embed", "audio_encoder"),
            ("kokoro", "kokoro", "tts", "kokoro"),
            ("tts", "speaker_1", "embed", "audio_1"),
            ("tts", "speaker_2", "embed", "audio_2"),
            ("image", "IMAGE", "sampler", "image"),
            ("sampler", "frames", "combine", "frames"),
            ("tts", "mix", "combine", "audio"),
            ("tts", "srt", "combine", "srt"),
        ],
    },
    "infinitetalk_talking_head_production": {
        "note": "Talking-head production: Portrait Check measures the photo (face size, framing, pose, "
        "sharpness, exposure: one warning per problem, with the fix); Dialogue TTS speaks the dialogue "
        "(Dia tags such as (laughs) and (sighs) are dropped or become pauses); Audio Check measures the speech; "
        "Find Speakers turns the two faces into the two person regions (person 1 = left), previewed on the "
        "node; the multi adapter animates each person with its voice; captions are burnt in.",
        "nodes": {
            **loaders(MULTI),
            "audio_encoder": audio_encoder(),
            "kokoro": ("InfiniteTalkKokoroLoader", (0, 780), {"name": "kokoro-v1_0.pth"}),
            "tts": (
                "InfiniteTalkDialogueTTS",
                (0, 900),
                {
                    "text": "[S1] Did you see the new video? (laughs) [S2] I did. (sighs) "
                    "It was made from a single photo!"
                },
            ),
            "image": ("LoadImage", (420, 420), {"image": "infinitetalk_two_people.png"}),
            "portrait": ("InfiniteTalkPortraitCheck", (420, 800), {"expected_faces": 2}),
            "speakers": ("InfiniteTalkFindSpeakers", (1250, 700), {}),
            "audio_check": ("InfiniteTalkAudioCheck", (1250, 1050), {}),
            "embed": ("InfiniteTalkAudioEmbed", (420, 250), {"normalize_loudness": False, "mode": "para"}),
            "encode": (
                "InfiniteTalkTextEncode",
                (420, 0),
                {"prompt": "Two people are having a friendly conversation, natural gestures, sharp faces."},
            ),
            "sampler": sampler(),
            "options": sampler_options(pos=(1700, 0)),
            "combine": (
                "InfiniteTalkVideoCombine",
                (1250, 0),
                {"captions": "burn-in", "filename_prefix": "InfiniteTalk/production"},
            ),
        },
        "links": COMMON_LINKS
        + [
            ("audio_encoder", "audio_encoder", "embed", "audio_encoder"),
            ("kokoro", "kokoro", "tts", "kokoro"),
            ("image", "IMAGE", "portrait", "image"),
            ("portrait", "image", "speakers", "image"),
            ("portrait", "image", "sampler", "image"),
            ("speakers", "speaker_masks", "sampler", "speaker_masks"),
            ("tts", "speaker_1", "embed", "audio_1"),
            ("tts", "speaker_2", "embed", "audio_2"),
            ("tts", "mix", "audio_check", "audio"),
            ("audio_check", "audio", "combine", "audio"),
            ("sampler", "frames", "combine", "frames"),
            ("tts", "srt", "combine", "srt"),
        ],
    },
    "infinitetalk_comfyui_loaders": {
        "note": "ComfyUI's own loaders: umT5 from Load CLIP (type wan), the Wan VAE from Load VAE and CLIP vision "
        "from Load CLIP Vision, as in ComfyUI's Wan templates (files in models/text_encoders, vae, "
        "clip_vision), feed the streaming sampler: nothing is loaded twice. The files of ComfyUI's InfiniteTalk "
        "template (umt5_xxl_fp8_e4m3fn_scaled, Wan2_1_VAE_bf16) and a GGUF umT5 from ComfyUI-GGUF's CLIP loader "
        "work the same way. README, 'ComfyUI's own encoders'.",
        "nodes": {
            "model": loaders(SINGLE)["model"],
            "text_encoder": (
                "CLIPLoader",
                (0, 260),
                {"clip_name": "umt5_xxl_fp16.safetensors", "type": "wan"},
            ),
            "clip_vision": ("CLIPVisionLoader", (0, 390), {"clip_name": "clip_vision_h.safetensors"}),
            "vae": ("VAELoader", (0, 520), {"vae_name": "wan_2.1_vae.safetensors"}),
            "audio_encoder": audio_encoder(),
            "image": ("LoadImage", (420, 420), {"image": "infinitetalk_portrait.png"}),
            "audio": ("InfiniteTalkLoadAudio", (0, 780), {"audio": "infinitetalk_speech.wav"}),
            "embed": ("InfiniteTalkAudioEmbed", (420, 250), {}),
            "encode": ("InfiniteTalkTextEncode", (420, 0), {"prompt": PROMPT}),
            "sampler": sampler(),
            "options": sampler_options(),
            "combine": (
                "InfiniteTalkVideoCombine",
                (1250, 0),
                {"filename_prefix": "InfiniteTalk/comfyui_loaders"},
            ),
        },
        "links": [
            ("model", "model", "sampler", "model"),
            ("vae", "VAE", "sampler", "vae"),
            ("clip_vision", "CLIP_VISION", "sampler", "clip_vision"),
            ("text_encoder", "CLIP", "encode", "text_encoder"),
            ("encode", "text_embeds", "sampler", "text_embeds"),
            ("embed", "audio_embeds", "sampler", "audio_embeds"),
            ("options", "options", "sampler", "options"),
            ("audio_encoder", "audio_encoder", "embed", "audio_encoder"),
            ("audio", "audio", "embed", "audio_1"),
            ("image", "IMAGE", "sampler", "image"),
            ("sampler", "frames", "combine", "frames"),
        ],
    },
}

BUILD_JS = """
const spec = arguments[0];
const done = arguments[arguments.length - 1];
(async () => {
  const app = window.app;
  app.graph.clear();
  const made = {};
  for (const [key, [type, pos, widgets]] of Object.entries(spec.nodes)) {
    const node = LiteGraph.createNode(type);
    if (!node) throw new Error("unknown node type " + type);
    node.pos = [pos[0], pos[1]];
    app.graph.add(node);
    for (const [name, value] of Object.entries(widgets)) {
      const w = (node.widgets || []).find((x) => x.name === name);
      if (!w) throw new Error(type + " has no widget " + name);
      w.value = value;
      if (w.callback) w.callback(value);
    }
    made[key] = node;
  }
  for (const [src, out, dst, inp] of spec.links) {
    const a = made[src], b = made[dst];
    const o = a.findOutputSlot(out), i = b.findInputSlot(inp);
    if (o < 0 || i < 0) throw new Error("bad link " + [src, out, dst, inp].join(" "));
    a.connect(o, b, i);
  }
  const note = LiteGraph.createNode("Note");
  note.pos = [1250, 780];
  note.size = [420, 220];
  note.widgets[0].value = spec.note;
  app.graph.add(note);
  app.graph.setDirtyCanvas(true, true);
  const prompt = await app.graphToPrompt();
  done(JSON.stringify({ui: app.graph.serialize(), api: prompt.output}));
})().catch((e) => done(JSON.stringify({error: String(e && e.stack || e)})));
"""


def main(only: list[str]) -> int:
    from tests.integration.browser import open_editor
    from tests.integration.harness import ComfyServer, ensure_comfyui

    ensure_comfyui()
    work = REPO / ".cache" / "make-workflows"
    shutil.rmtree(work, ignore_errors=True)
    tiny = REPO / ".cache" / "tiny"
    server = ComfyServer(work, tiny).start()
    driver = None
    try:
        driver = open_editor(server.url)
        driver.set_script_timeout(60)
        (OUT / "api").mkdir(parents=True, exist_ok=True)
        for name, spec in WORKFLOWS.items():
            if only and name not in only:
                continue
            result = json.loads(driver.execute_async_script(BUILD_JS, spec))
            if "error" in result:
                raise RuntimeError(f"{name}: {result['error']}")
            (OUT / f"{name}.json").write_text(json.dumps(result["ui"], indent=1) + "\n")
            (OUT / "api" / f"{name}_api.json").write_text(json.dumps(result["api"], indent=1) + "\n")
            print(f"wrote {name}")
            time.sleep(0.5)
    finally:
        if driver is not None:
            driver.quit()
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
