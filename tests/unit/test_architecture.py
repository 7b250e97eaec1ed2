"""The library's layers, read from its source (``ast``, nothing imported): no import loop, no import against
the layer order of docs/ARCHITECTURE.md, no ComfyUI, and no import of the library's own modules written
inside a function (those hide loops until some call fails). ``python tests/unit/test_architecture.py``
prints the figures (imports, loops, imports against the order, in-function imports, largest file, longest
procedure)."""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "infinitetalk"

# The layers, bottom first (docs/ARCHITECTURE.md, "Layers"). A module may import modules of its own layer and of
# the layers below it, never of a layer above. An entry names a module or a package (all its modules); the
# longest entry that matches a module decides its layer.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("infinitetalk", "infinitetalk.errors", "infinitetalk.config", "infinitetalk.weights")),
    (
        "helpers",
        (
            "infinitetalk.attention",
            "infinitetalk.buckets",
            "infinitetalk.color",
            "infinitetalk.faces",
            "infinitetalk.gguf_quants",
            "infinitetalk.gguf_tokenizer",
            "infinitetalk.keying",
            "infinitetalk.paths",
            "infinitetalk.prompts",
            "infinitetalk.sampling",
            "infinitetalk.spill",
            "infinitetalk.teacache",
            "infinitetalk.validation",
            "infinitetalk.windows",
        ),
    ),
    ("media", ("infinitetalk.media", "infinitetalk.audio_check")),
    (
        "checkpoints",
        ("infinitetalk.gguf_tensor", "infinitetalk.gguf_read", "infinitetalk.loading.state_dict"),
    ),
    (
        "networks",
        (
            "infinitetalk.model",
            "infinitetalk.parallel",
            "infinitetalk.encoders",
            "infinitetalk.loading",
            "infinitetalk.lora",
            "infinitetalk.offload",
            "infinitetalk.quant",
        ),
    ),
    (
        "files and speech",
        ("infinitetalk.loading.identify", "infinitetalk.loading.discover", "infinitetalk.tts"),
    ),
    (
        "generation",
        (
            "infinitetalk.audio_embedding",
            "infinitetalk.sinks",
            "infinitetalk.pipeline",
            "infinitetalk.telemetry",
            "infinitetalk.antidrift",
        ),
    ),
    (
        "front ends",
        (
            "infinitetalk.preflight",
            "infinitetalk.build",
            "infinitetalk.dubbing",
            "infinitetalk.composite",
            "infinitetalk.portrait",
            "infinitetalk.script",
            "infinitetalk.report",
            "infinitetalk.runs",
            "infinitetalk.hub",
            "infinitetalk.doctor",
            "infinitetalk.tiny",
            "infinitetalk.cli_args",
            "infinitetalk.cli",
            "infinitetalk.__main__",
        ),
    ),
)

# The library's own modules imported inside a function: none, unless named here with the reason.
DEFERRED_OWN: dict[tuple[str, str], str] = {}

# Other packages a library function may import where it needs them, and why they are not imported at the top.
DEFERRED_THIRD_PARTY: dict[str, str] = {
    "transformers": "heavy (seconds to import): only when an encoder is built or a config is read",
    "diffusers": "heavy: only when the VAE or a diffusers scheduler is built",
    "tokenizers": "part of the text encoder's build (transformers' tokenizer)",
    "sentencepiece": "only for a umT5 tokenizer given as spiece.model",
    "ftfy": "optional: prompt cleaning as the reference when installed",
    "cv2": "OpenCV: only for face detection",
    "gguf": "llama.cpp's gguf-py: only when a GGUF file is read or written",
    "kokoro": "text to speech only (with its torch model)",
    "misaki": "text to speech only: the grapheme-to-phoneme front ends, per language",
    "spacy": "text to speech only: misaki's English tagger",
    "optimum": "optional: optimum-quanto quantisation",
    "flash_attn": "optional attention kernel",
    "sageattention": "optional attention kernel",
    "scipy": "signal filters of the audio checks only",
    "psutil": "optional (a test dependency): free memory, /proc/meminfo otherwise",
    "yaml": "ComfyUI's dependency: only to read an extra_model_paths.yaml",
    "huggingface_hub": "downloads only (the library never downloads on its own)",
    "tqdm": "download progress only",
    "safetensors": "writing tiny checkpoints and converted files only",
    "torch": "torch submodules for one purpose (fake tensors in the memory preflight, distributed)",
}

COMFYUI = frozenset(
    {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "nodes", "server", "execution"}
)


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module of the library, or the top-level name of another package
    file: str
    line: int
    in_function: bool
    implicit: bool = False  # the package __init__ Python runs before the imported module


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}


def _in_function(tree: ast.AST) -> set[int]:
    """ids of import nodes written inside a function (at any depth)."""
    inside: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inside.update(id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return inside


def imports(root: Path = ROOT) -> list[Import]:
    """Every import of every library module (module level and inside functions, relative and absolute), plus
    the package ``__init__`` modules Python runs on the way to an imported module."""
    modules = library_modules(root)
    found: list[Import] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        inside = _in_function(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        file = path.relative_to(root).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem for a in node.names]
            else:
                continue
            for target in dict.fromkeys(targets):
                fn = id(node) in inside
                if target.split(".")[0] != PACKAGE:
                    found.append(Import(name, target.split(".")[0], file, node.lineno, fn))
                    continue
                while target not in modules:  # a name imported from a module
                    target = target.rpartition(".")[0]
                found.append(Import(name, target, file, node.lineno, fn))
                parts = target.split(".")
                for i in range(1, len(parts)):  # the packages above it, unless they hold the importer
                    parent = ".".join(parts[:i])
                    if parent != name and not name.startswith(parent + "."):
                        found.append(Import(name, parent, file, node.lineno, fn, implicit=True))
    return found


def layer_of(module: str) -> int:
    best, layer = -1, -1
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            inside = entry != PACKAGE and module.startswith(
                entry + "."
            )  # the package itself: only its __init__
            if (module == entry or inside) and len(entry) > best:
                best, layer = len(entry), index
    return layer


def own(found: list[Import]) -> list[Import]:
    return [i for i in found if i.target.split(".")[0] == PACKAGE and i.target != i.source]


def cycles(found: list[Import]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), over every import of the library."""
    graph: dict[str, set[str]] = defaultdict(set)
    for i in own(found):
        graph[i.source].add(i.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def shortest_loop(group: list[str], found: list[Import]) -> list[Import]:
    """The imports of one shortest loop through the modules of ``group`` (breadth-first from each module)."""
    members = set(group)
    edges: dict[str, list[Import]] = defaultdict(list)
    for i in own(found):
        if i.source in members and i.target in members:
            edges[i.source].append(i)
    best: list[Import] = []
    for start in sorted(members):
        paths: dict[str, list[Import]] = {start: []}
        queue = [start]
        while queue:
            v = queue.pop(0)
            for i in edges[v]:
                if i.target == start:
                    loop = paths[v] + [i]
                    if not best or len(loop) < len(best):
                        best = loop
                    queue = []
                    break
                if i.target not in paths:
                    paths[i.target] = paths[v] + [i]
                    queue.append(i.target)
    return best


def cycle_lines(group: list[str], found: list[Import]) -> list[str]:
    return [
        f"  {i.file}:{i.line}: {i.source} imports {i.target}"
        + (" (its package __init__)" if i.implicit else "")
        for i in shortest_loop(group, found)
    ]


def upward(found: list[Import]) -> list[str]:
    out = []
    for i in own(found):
        src, dst = layer_of(i.source), layer_of(i.target)
        if src < 0 or dst < 0:
            missing = i.source if src < 0 else i.target
            out.append(
                f"{i.file}:{i.line}: {missing} has no layer: add it to LAYERS and docs/ARCHITECTURE.md"
            )
        elif dst > src:
            how = " (the package __init__ Python runs first)" if i.implicit else ""
            out.append(
                f"{i.file}:{i.line}: {i.source} (layer '{LAYERS[src][0]}') imports {i.target}{how} "
                f"(layer '{LAYERS[dst][0]}', above it)"
            )
    return list(dict.fromkeys(out))


def deferred_own(found: list[Import]) -> list[str]:
    return [
        f"{i.file}:{i.line}: {i.source} imports {i.target} inside a function: import it at the top "
        "(an import loop is then an error at start-up), or name it in DEFERRED_OWN with the reason"
        for i in own(found)
        if i.in_function and not i.implicit and (i.file, i.target) not in DEFERRED_OWN
    ]


# ------------------------------------------------------------------------------------------------ tests
def test_the_library_has_no_import_loop():
    found = imports()
    loops = cycles(found)
    assert not loops, "import loops in the library:\n" + "\n".join(
        f"loop {n + 1} ({len(group)} modules), one way round:\n" + "\n".join(cycle_lines(group, found))
        for n, group in enumerate(loops)
    )


def test_every_import_follows_the_layer_order():
    wrong = upward(imports())
    assert not wrong, "imports against the layer order (docs/ARCHITECTURE.md):\n" + "\n".join(wrong)


def test_every_module_has_a_layer():
    missing = [name for name in library_modules() if layer_of(name) < 0]
    assert not missing, f"modules with no layer (add them to LAYERS and docs/ARCHITECTURE.md): {missing}"


def test_the_library_never_imports_comfyui():
    hits = [f"{i.file}:{i.line}: imports {i.target}" for i in imports() if i.target in COMFYUI]
    assert not hits, "the library must not import ComfyUI (nodes/ does):\n" + "\n".join(hits)


def test_own_modules_are_not_imported_inside_functions():
    hits = deferred_own(imports())
    assert not hits, "\n".join(hits)


def test_other_packages_imported_inside_functions_have_a_reason():
    stdlib = set(sys.stdlib_module_names)
    hits = sorted(
        {
            f"{i.file}:{i.line}: {i.target}"
            for i in imports()
            if i.in_function
            and i.target.split(".")[0] not in stdlib | {PACKAGE}
            and i.target not in DEFERRED_THIRD_PARTY
        }
    )
    assert not hits, "imports inside functions with no reason in DEFERRED_THIRD_PARTY:\n" + "\n".join(hits)


def test_no_private_name_is_imported_from_another_module():
    hits = []
    for name, path in library_modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module is not None:
                private = [
                    a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")
                ]
                if private:
                    hits.append(
                        f"{path.relative_to(ROOT).as_posix()}:{node.lineno}: {name} imports {private}"
                    )
    assert not hits, (
        "private names imported across modules (make them public or move the code):\n" + "\n".join(hits)
    )


def test_the_registry_reads_no_folder():
    """weights.py is data: the discovery on disk is loading/discover.py."""
    found = [i.target for i in imports() if i.source == "infinitetalk.weights"]
    assert set(found) <= {"infinitetalk.errors", "__future__", "collections", "dataclasses", "enum"}, found


def test_the_window_schedule_does_not_need_the_pipeline():
    found = {i.target for i in own(imports()) if i.source == "infinitetalk.windows"}
    assert found <= {"infinitetalk", "infinitetalk.config", "infinitetalk.errors"}, found


def test_the_checks_catch_an_upward_import_and_a_loop(tmp_path):
    """The checks above can fail: a copy of the library with one import against the order and one loop."""
    copy = tmp_path / PACKAGE
    for path in library_modules().values():
        dest = copy / path.relative_to(ROOT / PACKAGE)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    errors = copy / "errors.py"
    errors.write_text(errors.read_text(encoding="utf-8") + "\nfrom .pipeline import InfiniteTalkPipeline\n")
    found = imports(tmp_path)
    assert any(
        "infinitetalk.errors (layer 'foundation') imports infinitetalk.pipeline" in w for w in upward(found)
    )
    assert any("infinitetalk.errors" in g and "infinitetalk.pipeline" in g for g in cycles(found))


# ------------------------------------------------------------------------------------------------ figures
def sizes(root: Path = ROOT) -> tuple[tuple[int, str], tuple[int, str]]:
    """(lines, file) of the largest file and (lines, file:line name) of the longest procedure of the library
    and the nodes."""
    files, procedures = [], []
    for folder in (PACKAGE, "nodes"):
        for path in sorted((root / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            rel = path.relative_to(root).as_posix()
            files.append((text.count("\n"), rel))
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    procedures.append((node.end_lineno - node.lineno + 1, f"{rel}:{node.lineno} {node.name}"))
    return max(files), max(procedures)


def figures(root: Path = ROOT) -> str:
    found = imports(root)
    mine = [i for i in own(found) if not i.implicit]
    statements = {(i.file, i.line) for i in mine if i.in_function}
    folders: dict[str, set[str]] = defaultdict(set)
    for i in mine:
        a, b = i.source.split(".")[:2], i.target.split(".")[:2]
        if len(a) > 1 and len(b) > 1 and a[1] != b[1]:
            folders[a[1]].add(b[1])
    folder_loops = cycles(
        [Import(f"{PACKAGE}.{a}", f"{PACKAGE}.{b}", "", 0, False) for a in folders for b in folders[a]]
    )
    (file_lines, file), (proc_lines, proc) = sizes(root)
    return "\n".join(
        [
            f"imports of the library's own modules: {len(mine)}",
            f"import loops (modules): {len(cycles(found))} {cycles(found)}",
            f"import loops (top-level modules and folders): {len(folder_loops)} {folder_loops}",
            f"imports against the layer order: {len(upward(found))}",
            f"import statements of own modules inside functions: {len(statements)}",
            f"largest file: {file} ({file_lines} lines); longest procedure: {proc} ({proc_lines} lines)",
        ]
    )


if __name__ == "__main__":
    print(figures(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT))
