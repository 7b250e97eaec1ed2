"""The one boundary between file names that arrive from outside (a prompt, a script) and the file system.

A workflow shared by a stranger, or a prompt sent to a server others can reach, may carry file names: loader
entries (``weights/...`` included), Load Audio's file, a script's ``audio:`` lines, Kokoro voices, LoRA names.
Each one is resolved here against the folders allowed for its kind (the host passes them in: ComfyUI's model
folders incl. ``extra_model_paths.yaml``, the pack's ``weights/``, the input folder for media and recordings):

- A name is relative, in ``/`` (or ``\\``) separated parts. Refused in one line naming the input, before any
  file-system call: an empty name, a NUL byte, an absolute path (``/x``, ``\\x``), a drive (``C:``, ``C:x``),
  a UNC or device path (``\\\\server\\share``, ``//server/share``, ``\\\\?\\C:``), a Windows device name
  (``CON``, ``NUL``, ``COM1``, ...), and any ``..`` part, even one that would normalise back inside the folder.
- The name is then joined to each root in turn (the first root that holds it wins); the joined path is checked
  to lie lexically under that root.

Symlinks: a symlink inside a root is followed, wherever it points. Only someone with a shell on the server can
make one (ComfyUI's uploads write regular files), so a link is the owner's decision: model folders on other
disks, an input folder linked to a media drive. What a name can never do is climb: ``..`` is refused as a part,
not normalised away, because after a symlink the system resolves ``..`` from the link's *target*
(``link/../x`` is ``<target's parent>/x``): a lexical normalisation would call that name "inside" while the
open lands outside. So a symlink pointing out gives access to what it points at and never to its neighbours.

The command line does not come here: its user owns the machine and may type any path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from .errors import InputError, snippet

_DRIVE = re.compile(r"^[A-Za-z]:")
_SEPARATORS = re.compile(r"[\\/]")
# Windows opens these as devices in any folder, with any extension (CON.wav is the console)
_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}
MAX_NAME_CHARS = 1024  # longer names are not file names (PATH_MAX is 4096, a file name part 255)


def check_name(name: object, *, what: str) -> tuple[str, ...]:
    """The parts of a relative file name, or :class:`InputError` naming ``what`` (touches no file)."""
    if not isinstance(name, str):
        raise InputError(f"{what} {name!r} is not a file name: pick a file from the list")
    shown = snippet(name.replace("\x00", "\\0"), 120)
    if "\x00" in name:
        raise InputError(f"{what} '{shown}' holds a NUL byte: pick a file from the list")
    if not name.strip():
        raise InputError(f"{what} is empty: pick a file from the list")
    if len(name) > MAX_NAME_CHARS:
        raise InputError(f"{what} '{shown}' is {len(name)} characters long: pick a file from the list")
    if name.startswith(("\\\\", "//")):
        raise InputError(f"{what} '{shown}' is a network (UNC) path: give a name inside its folder")
    if _DRIVE.match(name):
        raise InputError(f"{what} '{shown}' names a drive: give a name inside its folder, not a full path")
    if name.startswith(("/", "\\")):
        raise InputError(f"{what} '{shown}' is an absolute path: give a name inside its folder")
    parts = tuple(p for p in _SEPARATORS.split(name) if p not in ("", "."))
    if ".." in parts:
        raise InputError(f"{what} '{shown}' climbs out of its folder with '..': give a name inside it")
    if not parts:
        raise InputError(f"{what} '{shown}' names no file: pick a file from the list")
    for part in parts:
        if part.split(".", 1)[0].rstrip(" ").upper() in _DEVICES:
            raise InputError(f"{what} '{shown}' holds the device name '{part}': rename the file")
    return parts


def within(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether ``path`` lies under ``root`` lexically (after normalisation; symlinks are not resolved)."""
    p, r = os.path.normpath(os.path.abspath(path)), os.path.normpath(os.path.abspath(root))
    try:
        return os.path.commonpath([p, r]) == r
    except ValueError:  # another drive (Windows)
        return False


def join(root: str | os.PathLike, name: str, *, what: str) -> Path:
    """``root / name`` for a checked relative ``name`` (the file need not exist)."""
    parts = check_name(name, what=what)
    path = Path(root).joinpath(*parts)
    if not within(path, root):  # cannot happen after check_name; kept as the last word
        raise InputError(f"{what} '{snippet(name, 120)}' leaves its folder: give a name inside it")
    return path


def resolve(
    name: str,
    roots: Sequence[str | os.PathLike],
    *,
    what: str,
    kind: str = "allowed",
    must_exist: bool = True,
) -> Path:
    """The file ``name`` in the first of ``roots`` that holds it (symlinks inside a root are followed).

    ``kind`` says which folders these are in the message (``"ComfyUI's input"``, ``"Kokoro voices"``).
    With ``must_exist=False`` a missing file gives its path in the first root.
    """
    check_name(name, what=what)
    roots = [Path(r) for r in roots]
    if not roots:
        raise InputError(f"{what} '{snippet(name, 120)}': no {kind} folder is set up to look in")
    paths = [join(r, name, what=what) for r in roots]
    for path in paths:
        if path.exists():
            return path
    if not must_exist:
        return paths[0]
    folders = ", ".join(str(r) for r in roots[:4]) + (f" (+{len(roots) - 4} more)" if len(roots) > 4 else "")
    raise InputError(
        f"{what} '{snippet(name, 120)}' not found in the {kind} folder ({folders}): pick a file from the list"
    )
