"""Facts the node and server tests share."""

# Every node the pack registers (node-id prefix "InfiniteTalk").
NODE_IDS = frozenset(
    {
        "InfiniteTalkModelLoader",
        "InfiniteTalkLoraLoader",
        "InfiniteTalkTextEncoderLoader",
        "InfiniteTalkClipVisionLoader",
        "InfiniteTalkVAELoader",
        "InfiniteTalkAudioEncoderLoader",
        "InfiniteTalkKokoroLoader",
        "InfiniteTalkDoctor",
        "InfiniteTalkLoadAudio",
        "InfiniteTalkAudioEmbed",
        "InfiniteTalkTTS",
        "InfiniteTalkDialogueTTS",
        "InfiniteTalkTextEncode",
        "InfiniteTalkSampler",
        "InfiniteTalkSamplerOptions",
        "InfiniteTalkVideoCombine",
        "InfiniteTalkPortraitCheck",
        "InfiniteTalkFindSpeakers",
        "InfiniteTalkAudioCheck",
        "InfiniteTalkScript",
        "InfiniteTalkPortraitBackdrop",
        "InfiniteTalkKey",
        "InfiniteTalkRunReport",
    }
)

# The ComfyUI model folders the pack reads (a tiny models/ tree has one of each).
MODEL_FOLDERS = (
    "diffusion_models",
    "model_patches",
    "text_encoders",
    "clip_vision",
    "vae",
    "audio_encoders",
    "loras",
    "kokoro",
)
