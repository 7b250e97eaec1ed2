"""ComfyUI's model patcher for a DiT holding GGUF weights (``infinitetalk.gguf_tensor.GGUFWeight``).

ComfyUI applies a LoRA by baking it into each weight (``patch_weight_to_device``: weight to float32, add the
delta, store the result). A GGUF weight is raw quantised blocks: baking would replace it with a full-precision
copy (or with garbage). For those weights the patcher below attaches ComfyUI's own ``LowVramPatch`` to the layer
instead (``gguf_weight_patch``); the GGUF linear applies it to the weight it has just dequantised, at every
call, and ``unpatch_model`` takes it off. Other weights are patched by ComfyUI as usual.
"""

from __future__ import annotations

import comfy.model_patcher

from ..infinitetalk.gguf_tensor import GGUFWeight

_PATCH = "gguf_weight_patch"


def gguf_patcher_class(base: type) -> type:
    """``base`` (the running ComfyUI's patcher class) with LoRA patches kept beside GGUF weights."""

    class GGUFModelPatcher(base):
        def patch_weight_to_device(self, key, device_to=None, inplace_update=False):
            owner, _, leaf = key.rpartition(".")
            module = self.model.get_submodule(owner) if key in self.patches else None
            if module is not None and isinstance(getattr(module, leaf, None), GGUFWeight):
                setattr(module, _PATCH, comfy.model_patcher.LowVramPatch(key, self.patches))
                return None
            return super().patch_weight_to_device(key, device_to, inplace_update)

        def unpatch_model(self, device_to=None, unpatch_weights=True):
            if unpatch_weights:
                for module in self.model.modules():
                    module.__dict__.pop(_PATCH, None)
            return super().unpatch_model(device_to, unpatch_weights)

    GGUFModelPatcher.__name__ = f"GGUF{base.__name__}"
    return GGUFModelPatcher
