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
        "InfiniteTalkLoadAudio",
        "InfiniteTalkAudioEmbed",
        "InfiniteTalkTTS",
        "InfiniteTalkDialogueTTS",
        "InfiniteTalkTextEncode",
        "InfiniteTalkSampler",
        "InfiniteTalkVideoCombine",
    }
)
