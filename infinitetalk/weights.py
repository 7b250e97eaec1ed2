"""The one list of the files that make up InfiniteTalk, and where users keep them: data only.

This module reads no folder and no file. Everything that names a weight file reads it: the discovery on
disk (:mod:`infinitetalk.loading.discover`: ``find_weights``, used by the command line and the loader
nodes), :mod:`infinitetalk.hub` (downloads), :mod:`infinitetalk.doctor`
and :mod:`infinitetalk.tiny` (random files under the published names). Changing a file name here is the
only edit those need.

Three kinds of trees are known (docs/WEIGHTS.md has the evidence for every name and source):

- the **official** ``weights/`` tree of the reference repositories (``Wan2.1-I2V-14B-480P/``,
  ``InfiniteTalk/{single,multi}/``, ``chinese-wav2vec2-base/``, ``Kokoro-82M/``);
- a **ComfyUI** ``models/`` tree with the files of ComfyUI's InfiniteTalk template
  (Comfy-Org repackaged files, Kijai's VAE, fp8-scaled DiT and wav2vec2);
- a **WanVideoWrapper** user's ``models/`` tree (Kijai's files, often in subfolders such as
  ``diffusion_models/WanVideo/`` or ``vae/wanvideo/``, ``wav2vec2/`` and
  ``transformers/TencentGameMate/chinese-wav2vec2-base/``, the wrapper's ``configs/T5_tokenizer``).

Files are identified by their content (:mod:`infinitetalk.loading.identify`: header keys, shapes,
dtypes); the published names below only order the choices (the first published file of a component
is preferred) and name what is missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from .errors import CheckpointError, InputError


class Component(str, Enum):
    """The parts of InfiniteTalk. The values are the one set of names used everywhere
    (command-line ``--only``, doctor, node tooltips, log lines)."""

    DIT = "dit"
    ADAPTER_SINGLE = "adapter_single"
    ADAPTER_MULTI = "adapter_multi"
    TEXT_ENCODER = "text_encoder"
    CLIP = "clip"
    VAE = "vae"
    AUDIO_ENCODER = "audio_encoder"
    TTS = "tts"
    LORA = "lora"

    def __str__(self) -> str:
        return self.value


ADAPTERS = (Component.ADAPTER_SINGLE, Component.ADAPTER_MULTI)


@dataclass(frozen=True)
class Download:
    """One file of a Hugging Face repository and where it goes, relative to the tree root."""

    repo: str
    filename: str
    dest: str
    revision: str | None = None

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo}/resolve/{self.revision or 'main'}/{self.filename}"


@dataclass(frozen=True)
class Published:
    """A file (or folder) as its publisher names it.

    ``key`` is a stable handle for code (tests, :mod:`infinitetalk.tiny`); ``name`` and ``folder`` are
    the published name and the folder the publisher tells users to put it in (a ComfyUI model folder for
    ``tree == "comfyui"``, a folder of the official ``weights/`` tree for ``tree == "official"``). The
    download list is derived from them, so the name is written once.
    """

    key: str
    name: str
    folder: str
    tree: str  # "official" | "comfyui"
    publisher: str  # "Wan-AI", "MeiGen-AI", "Comfy-Org", "Kijai", ...
    storage: str  # what the tensors are stored as, e.g. "bf16", "fp8_e4m3fn scaled", "fp16 + fp32"
    repo: str = ""  # Hugging Face repository ("": none known)
    repo_dir: str = ""  # folder of the file inside the repository
    contents: tuple[tuple[str, str | None], ...] = ()  # a folder entry: (file inside it, revision)
    companions: tuple[str, ...] = ()  # files fetched next to a file entry (paths relative to ``folder``)
    evidence: tuple[str, ...] = ()  # public pages/files naming this file (docs/WEIGHTS.md)
    hub: bool = False  # one of the files ``python -m infinitetalk.hub`` downloads for its tree

    @property
    def relpath(self) -> str:
        """Path relative to the tree root (``models/`` or ``weights/``)."""
        return f"{self.folder}/{self.name}" if self.folder else self.name

    @property
    def downloads(self) -> tuple[Download, ...]:
        if not self.repo:
            return ()

        def src(rel: str) -> str:
            return f"{self.repo_dir}/{rel}" if self.repo_dir else rel

        if self.contents:  # a folder: every file inside it
            return tuple(Download(self.repo, src(f), f"{self.relpath}/{f}", rev) for f, rev in self.contents)
        first = Download(self.repo, src(self.name), self.relpath)
        base = f"{self.folder}/" if self.folder else ""
        return (first, *(Download(self.repo, src(c), base + c) for c in self.companions))


@dataclass(frozen=True)
class ComponentSpec:
    component: Component
    title: str  # what a user reads: "DiT (Wan2.1 I2V 14B)"
    field: str  # the WeightPaths field
    required: bool  # needed for every video (TTS and LoRA are optional)
    folders: tuple[str, ...]  # ComfyUI model folders searched (recursively); the peers' folders included
    files: tuple[Published, ...]  # preferred first
    dtypes: tuple[str, ...]  # storage dtypes seen in the published files
    note: str = ""

    def published(self, key: str) -> Published:
        for f in self.files:
            if f.key == key:
                return f
        raise KeyError(f"{self.component}: no published file with key '{key}'")

    def first(self, tree: str) -> Published | None:
        return next((f for f in self.files if f.tree == tree), None)


# ---------------------------------------------------------------------------------------- sources
WAN = "Wan-AI/Wan2.1-I2V-14B-480P"
WAN_720 = "Wan-AI/Wan2.1-I2V-14B-720P"
INFINITETALK = "MeiGen-AI/InfiniteTalk"
WAV2VEC2 = "TencentGameMate/chinese-wav2vec2-base"
KOKORO = "hexgrad/Kokoro-82M"
KOKORO_ZH = "hexgrad/Kokoro-82M-v1.1-zh"  # the Mandarin model (its own voices and front end)
COMFY_WAN = "Comfy-Org/Wan_2.1_ComfyUI_repackaged"
KIJAI = "Kijai/WanVideo_comfy"
KIJAI_FP8 = "Kijai/WanVideo_comfy_fp8_scaled"
KIJAI_WAV2VEC2 = "Kijai/wav2vec2_safetensors"
FUSIONX = "vrgamedevgirl84/Wan14BT2VFusioniX"

WAN_DIR = "Wan2.1-I2V-14B-480P"
WAN_DIR_720 = "Wan2.1-I2V-14B-720P"
UMT5_TOKENIZER_DIR = f"{WAN_DIR}/google/umt5-xxl"
UMT5_TOKENIZER_FILES = ("spiece.model", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json")
WRAPPER_TOKENIZER = "configs/T5_tokenizer"  # inside custom_nodes/ComfyUI-WanVideoWrapper
# Kokoro's weights files, each with its repository (the Mandarin model names its repository for the front end).
KOKORO_MODEL_FILES = {"kokoro-v1_0.pth": KOKORO, "kokoro-v1_1-zh.pth": KOKORO_ZH}
# Released Kokoro voices (prefix: language letter + gender), a few per language: the hub downloads them, the tiny
# model holds them. Any other voices/*.pt in the model folder works too.
KOKORO_VOICES = (
    "af_heart",
    "af_bella",
    "am_adam",
    "am_michael",
    "bf_emma",
    "bm_george",
    "ef_dora",
    "ff_siwis",
    "hf_alpha",
    "if_sara",
    "jf_alpha",
    "pf_dora",
    "zf_xiaobei",
    "zm_yunjian",
)
DEFAULT_VOICES = {1: "af_heart", 2: "am_adam"}  # speaker -> Kokoro voice when none is chosen

# Evidence: the public files that name each file (docs/WEIGHTS.md quotes them).
EV_TEMPLATE = (
    "https://github.com/Comfy-Org/workflow_templates/blob/main/templates/video_wan2_1_infinitetalk.json"
)
EV_DOWNLOADER = "https://github.com/hiddenswitch/ComfyUI/blob/master/comfy/model_downloader.py"
EV_REFERENCE = "https://github.com/MeiGen-AI/InfiniteTalk#quick-start"
EV_WRAPPER_W2V = "https://github.com/kijai/ComfyUI-WanVideoWrapper/blob/main/multitalk/nodes.py"
EV_WRAPPER_DL = "https://github.com/kijai/ComfyUI-WanVideoWrapper/blob/main/fantasytalking/nodes.py"
EV_WRAPPER_T5 = "https://github.com/kijai/ComfyUI-WanVideoWrapper/blob/main/nodes_model_loading.py"
EV_COMFY_PATCH = "https://github.com/Comfy-Org/ComfyUI/blob/master/comfy_extras/nodes_model_patch.py"
EV_ARTOFFICIAL = (
    "https://github.com/TheArtOfficial/ArtOfficialStudio/blob/main/scripts/preset_model_scripts/"
    "download_infinitetalk.sh"
)
EV_RUNPOD = "https://github.com/affibox/Infinitetalk_Runpod_hub/blob/main/download-models.sh"
EV_KIJAI_HF = "https://huggingface.co/Kijai/WanVideo_comfy/tree/main/InfiniteTalk"
EV_KOKORO = "https://huggingface.co/hexgrad/Kokoro-82M"
EV_KOKORO_ZH = "https://huggingface.co/hexgrad/Kokoro-82M-v1.1-zh"
EV_KIJAI_FP8_HF = "https://huggingface.co/Kijai/WanVideo_comfy_fp8_scaled/tree/main/InfiniteTalk"


def _comfy(
    key, name, folder, publisher, storage, repo, repo_dir, *evidence, hub=False, companions=()
) -> Published:
    """A single file in a ComfyUI ``models/`` folder, downloaded from ``repo/repo_dir/name``."""
    return Published(
        key, name, folder, "comfyui", publisher, storage, repo, repo_dir, companions=tuple(companions),
        evidence=evidence, hub=hub,
    )  # fmt: skip


def _official(
    key, name, folder, publisher, storage, repo, repo_dir, *evidence, hub=True, contents=(), companions=()
):
    """A file (or, with ``contents``, a folder) of the official ``weights/`` tree."""
    return Published(
        key, name, folder, "official", publisher, storage, repo, repo_dir, tuple(contents), tuple(companions),
        evidence, hub,
    )  # fmt: skip


_DIT_SHARDS = [(f"diffusion_pytorch_model-0000{i}-of-00007.safetensors", None) for i in range(1, 8)]
_DIT_CONTENTS = (*_DIT_SHARDS, ("diffusion_pytorch_model.safetensors.index.json", None))
_T5_TOKENIZER = tuple(f"google/umt5-xxl/{n}" for n in UMT5_TOKENIZER_FILES)
# the safetensors conversion of chinese-wav2vec2-base lives in a pull-request branch (the reference's README)
_W2V_CONTENTS = (
    ("config.json", None),
    ("preprocessor_config.json", None),
    ("model.safetensors", "refs/pr/1"),
)
_KOKORO_FILES = ("config.json", "kokoro-v1_0.pth", *(f"voices/{v}.pt" for v in KOKORO_VOICES))


_MIXED = "fp16 + fp32 (audio_proj.*, 1-D block tensors)"
_SD, _MP, _TE = "split_files/diffusion_models", "split_files/model_patches", "split_files/text_encoders"

# ---------------------------------------------------------------------------------------- registry
# One row per published file: key, name, folder, publisher, storage, repository, folder in the repository,
# evidence. The first file of each tree is preferred; ``hub=True`` marks what the downloader fetches.
# fmt: off
_SPECS: tuple[ComponentSpec, ...] = (
    ComponentSpec(Component.DIT, "DiT (Wan2.1 I2V 14B)", "dit", True, ("diffusion_models", "unet"), (
        _official("official", WAN_DIR, "", "Wan-AI", "bf16 (7 shards)", WAN, "", EV_REFERENCE, contents=_DIT_CONTENTS),
        _official("official_720", WAN_DIR_720, "", "Wan-AI", "bf16 (7 shards)", WAN_720, "", EV_REFERENCE, hub=False,
                  contents=_DIT_CONTENTS),
        _comfy("comfy_fp16", "wan2.1_i2v_480p_14B_fp16.safetensors", "diffusion_models", "Comfy-Org", "fp16",
               COMFY_WAN, _SD, EV_DOWNLOADER, hub=True),
        _comfy("comfy_bf16", "wan2.1_i2v_480p_14B_bf16.safetensors", "diffusion_models", "Comfy-Org", "bf16",
               COMFY_WAN, _SD, EV_DOWNLOADER),
        _comfy("comfy_fp8", "wan2.1_i2v_480p_14B_fp8_e4m3fn.safetensors", "diffusion_models", "Comfy-Org",
               "fp8_e4m3fn", COMFY_WAN, _SD, EV_DOWNLOADER),
        _comfy("kj_fp8_scaled", "Wan2_1-I2V-14B-480p_fp8_e4m3fn_scaled_KJ.safetensors", "diffusion_models", "Kijai",
               "fp8_e4m3fn scaled", KIJAI_FP8, "I2V", EV_TEMPLATE, EV_DOWNLOADER, EV_ARTOFFICIAL),
        _comfy("kj_fp8", "Wan2_1-I2V-14B-480P_fp8_e4m3fn.safetensors", "diffusion_models", "Kijai", "fp8_e4m3fn",
               KIJAI, "", EV_DOWNLOADER),
        _comfy("comfy_720_fp16", "wan2.1_i2v_720p_14B_fp16.safetensors", "diffusion_models", "Comfy-Org", "fp16",
               COMFY_WAN, _SD, EV_DOWNLOADER),
        _comfy("comfy_720_bf16", "wan2.1_i2v_720p_14B_bf16.safetensors", "diffusion_models", "Comfy-Org", "bf16",
               COMFY_WAN, _SD, EV_DOWNLOADER),
        _comfy("comfy_720_fp8", "wan2.1_i2v_720p_14B_fp8_e4m3fn.safetensors", "diffusion_models", "Comfy-Org",
               "fp8_e4m3fn", COMFY_WAN, _SD, EV_DOWNLOADER),
        _comfy("kj_720_fp8_scaled", "Wan2_1-I2V-14B-720p_fp8_e4m3fn_scaled_KJ.safetensors", "diffusion_models",
               "Kijai", "fp8_e4m3fn scaled", KIJAI_FP8, "I2V", EV_DOWNLOADER),
        _comfy("kj_720_fp8", "Wan2_1-I2V-14B-720P_fp8_e4m3fn.safetensors", "diffusion_models", "Kijai",
               "fp8_e4m3fn", KIJAI, "", EV_DOWNLOADER),
    ), ("bf16", "fp16", "fp8_e4m3fn", "fp8_e4m3fn scaled (+ fp32 scale_weight)"),
        "480p and 720p are the same network (different training): both load; 480p is the reference's."),
    ComponentSpec(Component.ADAPTER_SINGLE, "InfiniteTalk adapter, one speaker", "adapter", True,
                  ("model_patches", "diffusion_models", "unet"), (
        _official("official", "infinitetalk.safetensors", "InfiniteTalk/single", "MeiGen-AI", "as published",
                  INFINITETALK, "single", EV_REFERENCE),
        _comfy("comfy", "wan2.1_infiniteTalk_single_fp16.safetensors", "model_patches", "Comfy-Org", _MIXED,
               COMFY_WAN, _MP, EV_TEMPLATE, EV_COMFY_PATCH, hub=True),
        _comfy("kj_fp16", "Wan2_1-InfiniTetalk-Single_fp16.safetensors", "diffusion_models", "Kijai", _MIXED,
               KIJAI, "InfiniteTalk", EV_KIJAI_HF, EV_RUNPOD),
        _comfy("kj_fp8_scaled", "Wan2_1-InfiniteTalk-Single_fp8_e4m3fn_scaled_KJ.safetensors", "diffusion_models",
               "Kijai", "fp8_e4m3fn scaled", KIJAI_FP8, "InfiniteTalk", EV_ARTOFFICIAL),
    ), ("fp16 + fp32", "fp32", "fp8_e4m3fn scaled"),
        "Single and multi adapters have the same keys; only the published name tells them apart."),
    ComponentSpec(Component.ADAPTER_MULTI, "InfiniteTalk adapter, two speakers", "adapter", False,
                  ("model_patches", "diffusion_models", "unet"), (
        _official("official", "infinitetalk.safetensors", "InfiniteTalk/multi", "MeiGen-AI", "as published",
                  INFINITETALK, "multi", EV_REFERENCE),
        _comfy("comfy", "wan2.1_infiniteTalk_multi_fp16.safetensors", "model_patches", "Comfy-Org", _MIXED,
               COMFY_WAN, _MP, EV_TEMPLATE, hub=True),
        _comfy("kj_fp16", "Wan2_1-InfiniteTalk-Multi_fp16.safetensors", "diffusion_models", "Kijai", _MIXED,
               KIJAI, "InfiniteTalk", EV_KIJAI_HF),
        _comfy("kj_fp8_scaled", "Wan2_1-InfiniteTalk-Multi_fp8_e4m3fn_scaled_KJ.safetensors", "diffusion_models",
               "Kijai", "fp8_e4m3fn scaled", KIJAI_FP8, "InfiniteTalk", EV_KIJAI_FP8_HF),
    ), ("fp16 + fp32", "fp32", "fp8_e4m3fn scaled")),
    ComponentSpec(Component.TEXT_ENCODER, "text encoder (umT5-XXL)", "text_encoder", True, ("text_encoders", "clip"), (
        _official("official", "models_t5_umt5-xxl-enc-bf16.pth", WAN_DIR, "Wan-AI", "bf16", WAN, "", EV_REFERENCE,
                  companions=_T5_TOKENIZER),
        _comfy("comfy_fp16", "umt5_xxl_fp16.safetensors", "text_encoders", "Comfy-Org", "fp16 (+ spiece_model)",
               COMFY_WAN, _TE, EV_DOWNLOADER, hub=True),
        _comfy("comfy_fp8_scaled", "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders", "Comfy-Org",
               "fp8_e4m3fn scaled (+ spiece_model)", COMFY_WAN, _TE, EV_TEMPLATE, EV_DOWNLOADER),
        _comfy("kj_bf16", "umt5-xxl-enc-bf16.safetensors", "text_encoders", "Kijai", "bf16 (original Wan keys)",
               KIJAI, "", EV_RUNPOD, EV_WRAPPER_T5),
        _comfy("kj_fp8", "umt5-xxl-enc-fp8_e4m3fn.safetensors", "text_encoders", "Kijai",
               "fp8_e4m3fn (original Wan keys)", KIJAI, "", EV_WRAPPER_T5),
    ), ("bf16", "fp16", "fp8_e4m3fn", "fp8_e4m3fn scaled"),
        "Kijai's files hold no tokenizer: see the tokenizer search order in docs/WEIGHTS.md."),
    ComponentSpec(Component.CLIP, "image encoder (CLIP ViT-H/14)", "clip", True, ("clip_vision",), (
        _official("official", "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth", WAN_DIR, "Wan-AI", "fp16",
                  WAN, "", EV_REFERENCE),
        _comfy("comfy", "clip_vision_h.safetensors", "clip_vision", "Comfy-Org", "fp16", COMFY_WAN,
               "split_files/clip_vision", EV_DOWNLOADER, EV_RUNPOD, hub=True),
    ), ("fp16", "fp32"),
        "ComfyUI's InfiniteTalk template runs without CLIP vision; the reference (and this pack) use it."),
    ComponentSpec(Component.VAE, "VAE (Wan 2.1)", "vae", True, ("vae",), (
        _official("official", "Wan2.1_VAE.pth", WAN_DIR, "Wan-AI", "fp32", WAN, "", EV_REFERENCE),
        _comfy("comfy", "wan_2.1_vae.safetensors", "vae", "Comfy-Org", "fp16", COMFY_WAN, "split_files/vae",
               EV_DOWNLOADER, hub=True),
        _comfy("kj_bf16", "Wan2_1_VAE_bf16.safetensors", "vae", "Kijai", "bf16", KIJAI, "", EV_TEMPLATE,
               EV_DOWNLOADER, EV_RUNPOD),
        _comfy("kj_fp32", "Wan2_1_VAE_fp32.safetensors", "vae", "Kijai", "fp32", KIJAI, "", EV_ARTOFFICIAL),
    ), ("fp32", "bf16", "fp16")),
    ComponentSpec(Component.AUDIO_ENCODER, "audio encoder (chinese-wav2vec2-base)", "audio_encoder", True,
                  ("audio_encoders", "wav2vec2", "transformers/TencentGameMate/chinese-wav2vec2-base"), (
        _official("official", "chinese-wav2vec2-base", "", "TencentGameMate", "fp32", WAV2VEC2, "", EV_REFERENCE,
                  contents=_W2V_CONTENTS),
        _comfy("kj_fp16", "wav2vec2-chinese-base_fp16.safetensors", "audio_encoders", "Kijai",
               "fp16 (wav2vec2.-prefixed, with pre-training heads)", KIJAI_WAV2VEC2, "", EV_TEMPLATE, EV_WRAPPER_W2V,
               hub=True),
        Published("wrapper_hf", "chinese-wav2vec2-base", "transformers/TencentGameMate", "comfyui", "TencentGameMate",
                  "fp32 (pytorch_model.bin)", evidence=(EV_WRAPPER_DL,)),
    ), ("fp32", "fp16"),
        "WanVideoWrapper users keep Kijai's file in models/wav2vec2/ or the HF folder its downloader makes."),
    ComponentSpec(Component.TTS, "text-to-speech (Kokoro-82M)", "kokoro", False, ("kokoro",), (
        _official("official", "Kokoro-82M", "", "hexgrad", "fp16", KOKORO, "", EV_KOKORO,
                  contents=tuple((f, None) for f in _KOKORO_FILES)),
        _comfy("comfy", "kokoro-v1_0.pth", "kokoro", "hexgrad", "fp16", KOKORO, "", EV_KOKORO, hub=True,
               companions=[f for f in _KOKORO_FILES if f != "kokoro-v1_0.pth"]),
        _comfy("comfy_zh", "kokoro-v1_1-zh.pth", "kokoro", "hexgrad", "as published", KOKORO_ZH, "", EV_KOKORO_ZH),
    ), ("fp16",), "models/kokoro/ is this pack's folder (config.json, kokoro-v1_0.pth, voices/*.pt)."),
    ComponentSpec(Component.LORA, "LoRA (optional: step-distill, FusionX)", "lora", False, ("loras",), (
        _comfy("lightx2v", "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors", "loras", "Kijai",
               "bf16", KIJAI, "Lightx2v", EV_TEMPLATE, EV_RUNPOD, hub=True),
        _comfy("lightx2v_old", "Wan21_I2V_14B_lightx2v_cfg_step_distill_lora_rank64.safetensors", "loras",
               "Kijai", "bf16", KIJAI, "", EV_REFERENCE),
        _comfy("fusionx", "Wan2.1_I2V_14B_FusionX_LoRA.safetensors", "loras", "vrgamedevgirl84", "bf16", FUSIONX,
               "FusionX_LoRa", EV_REFERENCE),
    ), ("bf16", "fp16")),
)
# fmt: on

SPECS: dict[Component, ComponentSpec] = {s.component: s for s in _SPECS}


def spec(component: Component | str) -> ComponentSpec:
    """The spec of ``component`` (a :class:`Component` or its name)."""
    return SPECS[Component(component)]


def component_names() -> tuple[str, ...]:
    return tuple(c.value for c in Component)


def parse_components(names: Iterable[str], what: str = "--only") -> list[Component]:
    """Component names (the enum values) -> components; one clear error for an unknown name."""
    out = []
    for name in names:
        try:
            out.append(Component(name))
        except ValueError:
            raise InputError(
                f"{what}: unknown component '{name}'; choose from {', '.join(component_names())}"
            ) from None
    return out


def comfy_folders() -> tuple[str, ...]:
    """Every ComfyUI model folder any component is searched in (first-seen order)."""
    seen: dict[str, None] = {}
    for s in SPECS.values():
        for folder in s.folders:
            seen.setdefault(folder, None)
    return tuple(seen)


def official_roots_markers() -> tuple[str, ...]:
    """Top-level entries that mark an official ``weights/`` tree."""
    seen: dict[str, None] = {}
    for s in SPECS.values():
        for f in s.files:
            if f.tree == "official":
                seen.setdefault(f.relpath.split("/")[0], None)
    return tuple(seen)


def download_hint(component: Component) -> str:
    """Where to get ``component``: the official and the ComfyUI file, with their sources."""
    s = spec(component)
    parts = []
    for tree, where in (("comfyui", "models/"), ("official", "weights/")):
        f = s.first(tree)
        if f is None:
            continue
        repo = f.repo or f.publisher
        parts.append(f"'{where}{f.relpath}' (Hugging Face {repo})")
    return " or ".join(parts)


def missing_error(component: Component, where: str, near_misses: Sequence[str] = ()) -> CheckpointError:
    unusable = f"; found but not usable: {'; '.join(near_misses[:3])}" if near_misses else ""
    return CheckpointError(
        f"{spec(component).title} not found under {where}: expected {download_hint(component)}; "
        f"put it in one of the ComfyUI folders {', '.join(spec(component).folders)} (subfolders are fine)"
        + unusable
    )


def iter_published(tree: str | None = None) -> Iterator[tuple[ComponentSpec, Published]]:
    for s in SPECS.values():
        for f in s.files:
            if tree is None or f.tree == tree:
                yield s, f


def published_by_name(name: str) -> list[tuple[Component, Published]]:
    """Which published files carry this file name (case-insensitive)."""
    return [(s.component, f) for s, f in iter_published() if f.name.lower() == name.lower()]


def folders_for(components: Iterable[Component]) -> Mapping[str, None]:
    return dict.fromkeys(folder for c in components for folder in spec(c).folders)
