"""Schema helpers that use the running ComfyUI's node API where it exists and fall back where it does not.

The node API comes from ``nodes/_api.py`` (a versioned ``comfy_api``). Every feature is detected on the
objects themselves, never from a version number:

- ``advanced``: newer ComfyUI inputs take ``advanced=`` (the front end folds those inputs away); 0.3.75's
  do not, and there the flag travels in the input's ``extra_dict``, which ``/object_info`` passes on
  unchanged (front ends that know the flag read it from there too).
- ``DynamicCombo`` (``io.DynamicCombo``, ComfyUI >= 0.8): a combo whose options reveal their own inputs.
  Without it the same inputs are declared flat, right after the combo, in the same order, so a workflow
  saved on either kind of ComfyUI keeps its widget values (see :func:`choice`).
"""

from __future__ import annotations

from typing import Any

from ._api import io


def advanced(inp):
    """Mark an input as an expert knob: native ``advanced`` when the input has it, else ``extra_dict``."""
    if hasattr(inp, "advanced"):  # newer ComfyUI: Input.__init__ stores advanced (None by default)
        inp.advanced = True
    else:
        inp.extra_dict["advanced"] = True
    return inp


def has_dynamic_combo(api=None) -> bool:
    """True when the running ComfyUI offers ``io.DynamicCombo`` with options."""
    combo = getattr(api if api is not None else io, "DynamicCombo", None)
    return combo is not None and hasattr(combo, "Option") and hasattr(combo, "Input")


def dynamic_combo(
    combo: io.Combo.Input,
    reveals: dict[str, list],
    api=None,
    force_flat: bool = False,
    flat_before: bool = False,
) -> list:
    """``combo`` whose options reveal inputs: one ``DynamicCombo`` where supported, else the flat inputs.

    Args:
        combo: the plain combo (id, options in order, tooltip; the first option is the default).
        reveals: option -> inputs shown only when that option is selected (options not listed reveal
            nothing). Inputs shared by several options are declared once in the flat form.
        api: the ``io`` namespace (default: ComfyUI's; a stand-in in tests).
        force_flat: declare the flat form even when ``DynamicCombo`` exists.
        flat_before: in the flat form, put the revealed inputs before the combo (where an existing node
            already had them: saved workflows address sockets by position).
        flat_before: in the flat form, put the revealed inputs before the combo (where an existing node
            already had them: saved workflows address sockets by position).

    Returns:
        The inputs to put in the schema, in order. The node's ``execute`` receives either the flat values
        or, with ``DynamicCombo``, one dict ``{<combo id>: option, <input id>: value, ...}``: read both with
        :func:`choice`.
    """
    api = api if api is not None else io
    if force_flat or not has_dynamic_combo(api):
        revealed, seen = [], set()
        for inputs in reveals.values():
            for inp in inputs:
                if inp.id not in seen:
                    seen.add(inp.id)
                    revealed.append(advanced(inp) if not getattr(inp, "optional", False) else inp)
        return [*revealed, combo] if flat_before else [combo, *revealed]
    options = [api.DynamicCombo.Option(key, list(reveals.get(key, []))) for key in combo.options]
    dyn = api.DynamicCombo.Input(combo.id, options=options, tooltip=combo.tooltip)
    return [dyn]


def choice(value: Any, combo_id: str, flat: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """(selected option, revealed values) from a DynamicCombo dict or a flat combo value.

    With ``DynamicCombo`` ComfyUI passes ``{combo_id: option, <revealed id>: value, ...}``; the flat form
    passes the option string and the caller hands the flat inputs' values in ``flat``.
    """
    if isinstance(value, dict):
        return str(value.get(combo_id)), {k: v for k, v in value.items() if k != combo_id}
    return str(value), dict(flat or {})
