"""ComfyUI-InfiniteTalk: ComfyUI entry point.

ComfyUI imports this package from ``custom_nodes/`` and calls :func:`comfy_entrypoint`. Nothing
happens at import time: the node classes are registered when ComfyUI asks for them, and every model
is loaded by a node at run time. The file stays importable without ComfyUI (for tools such as pytest).
"""


async def comfy_entrypoint():
    """Return the pack's ``ComfyExtension`` (ComfyUI V3 node registration)."""
    from .nodes import InfiniteTalkExtension

    return InfiniteTalkExtension()


# Front-end glue (an audio player for InfiniteTalk Load Audio), served by ComfyUI from this folder.
WEB_DIRECTORY = "./web"
