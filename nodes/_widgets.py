"""Small helpers for building node schemas."""

from __future__ import annotations


def advanced(inp):
    """Mark an input as an expert knob (``advanced``: newer ComfyUI front ends fold these away).

    ComfyUI 0.3.75's ``io.*.Input`` constructors have no ``advanced=`` argument yet; the flag is carried
    in the input's extra dict, which ComfyUI serialises into ``/object_info`` unchanged.
    """
    inp.extra_dict["advanced"] = True
    return inp
