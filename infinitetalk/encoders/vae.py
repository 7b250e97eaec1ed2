"""Wan 2.1 causal video VAE (diffusers ``AutoencoderKLWan``), with the Wan latent normalisation.

Layouts accepted:

- original Wan ``Wan2.1_VAE.pth`` and ComfyUI ``wan_2.1_vae.safetensors`` (same keys: ``encoder.conv1``,
  ``encoder.downsamples.{i}``, ``conv1``/``conv2``, ``decoder.upsamples.{i}``, ...): converted with
  diffusers' own ``convert_wan_vae_to_diffusers`` (applied to key names only, tensors stay lazy);
- a diffusers single file (``encoder.conv_in`` ...), a diffusers folder (``config.json`` +
  weights), or a Wan diffusers repo root holding ``vae/``.

Dimensions from shapes: ``base_dim`` from the first conv, ``z_dim`` from the post-quant conv, channel
multipliers, res-blocks per level and temporal downsampling from the encoder blocks. diffusers'
converter assumes the Wan 2.1 structure (4 levels, 2 res blocks each, no attention in the levels):
other structures (e.g. the Wan 2.2 VAE) are refused with a clear error.

``encode`` returns the *posterior mean* normalised as the reference does, ``(mu - mean) / std``
with the fixed Wan 2.1 16-channel constants; ``decode`` undoes it and clamps to ``[-1, 1]``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from ..errors import CheckpointError, InputError
from ..loading.state_dict import CheckpointReader, open_checkpoint
from . import FrozenEncoder, LazyStateDict, build_module, check_materialized

logger = logging.getLogger(__name__)

# Per-channel statistics of Wan 2.1 latents (reference wan/modules/vae.py, also diffusers' config).
WAN21_LATENT_MEAN = (
    -0.7571,
    -0.7089,
    -0.9113,
    0.1075,
    -0.1745,
    0.9653,
    -0.1517,
    1.5508,
    0.4134,
    -0.0715,
    0.5517,
    -0.3632,
    -0.1922,
    -0.9497,
    0.2503,
    -0.2921,
)
WAN21_LATENT_STD = (
    2.8184,
    1.4541,
    2.3275,
    2.6558,
    1.2196,
    1.7708,
    2.6052,
    2.0743,
    3.2687,
    2.1526,
    2.8652,
    1.5579,
    1.6382,
    1.1253,
    2.8251,
    1.9160,
)
Z_DIM = 16
SPATIAL_STRIDE = 8
TEMPORAL_STRIDE = 4
_PREFIXES = ("vae.", "first_stage_model.", "model.", "module.")


def latent_frames(num_frames: int) -> int:
    """Latent frames for ``num_frames`` video frames: the first alone, then groups of 4."""
    return 1 + (num_frames - 1) // TEMPORAL_STRIDE


# --------------------------------------------------------------------------------------------
# keys and config
# --------------------------------------------------------------------------------------------
def wan_to_diffusers_keys(keys: list[str]) -> dict[str, str]:
    """diffusers key -> original Wan key, using diffusers' converter on the names only."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    return convert_wan_vae_to_diffusers({k: k for k in keys})


def _key_map(source: CheckpointReader) -> dict[str, str]:
    keys = list(source.keys())
    if "encoder.conv1.weight" in keys and "decoder.conv1.weight" in keys:
        return wan_to_diffusers_keys(keys)
    if "encoder.conv_in.weight" in keys and "decoder.conv_in.weight" in keys:
        return {k: k for k in keys}
    raise CheckpointError(
        f"checkpoint {source.path} is not a Wan VAE (no encoder.conv1 / decoder.conv1): pick "
        "Wan2.1_VAE.pth or wan_2.1_vae.safetensors"
    )


def wan_vae_dims(source: CheckpointReader) -> dict:
    """Base width, input and latent channels from the header (no diffusers import); raises for another VAE."""
    keys = set(source.keys())
    if "encoder.conv1.weight" in keys and "conv2.weight" in keys:
        base_dim, in_channels = tuple(source.shape("encoder.conv1.weight"))[:2]
        z_dim = tuple(source.shape("conv2.weight"))[0]
    elif "encoder.conv_in.weight" in keys and "post_quant_conv.weight" in keys:
        base_dim, in_channels = tuple(source.shape("encoder.conv_in.weight"))[:2]
        z_dim = tuple(source.shape("post_quant_conv.weight"))[0]
    else:
        _key_map(source)  # raises the one-line "not a Wan VAE" error
        raise CheckpointError(f"checkpoint {source.path}: Wan VAE without its latent convolution (conv2)")
    if in_channels != 3 or z_dim != Z_DIM:
        raise CheckpointError(
            f"checkpoint {source.path}: VAE with {in_channels} input / {z_dim} latent channels is not the Wan 2.1 "
            "VAE (3 / 16; the Wan 2.2 VAE is not supported): use Wan2.1_VAE.pth or wan_2.1_vae.safetensors"
        )
    return dict(base_dim=base_dim, z_dim=z_dim)


def infer_vae_config(shapes: dict[str, torch.Size], source: Path | str = "?") -> dict:
    """``AutoencoderKLWan`` keyword arguments from diffusers-named shapes."""
    base_dim, in_channels = shapes["encoder.conv_in.weight"][:2]
    z_dim = shapes["post_quant_conv.weight"][0]
    if in_channels != 3 or z_dim != Z_DIM:
        raise CheckpointError(
            f"checkpoint {source}: VAE with {in_channels} input / {z_dim} latent channels is not the Wan 2.1 VAE "
            "(3 / 16; the Wan 2.2 VAE is not supported): use Wan2.1_VAE.pth or wan_2.1_vae.safetensors"
        )
    levels, temporal = _encoder_levels(shapes)
    res_blocks = {len(level) for level in levels}
    if len(levels) != 4 or res_blocks != {2}:
        raise CheckpointError(
            f"checkpoint {source}: VAE encoder has {len(levels)} levels with {sorted(res_blocks)} res blocks; "
            "only the Wan 2.1 structure (4 levels x 2) is supported"
        )
    dim_mult = [level[-1] // base_dim for level in levels]
    return dict(
        base_dim=base_dim,
        z_dim=z_dim,
        dim_mult=dim_mult,
        num_res_blocks=2,
        attn_scales=[],
        temperal_downsample=temporal,
        latents_mean=list(WAN21_LATENT_MEAN),
        latents_std=list(WAN21_LATENT_STD),
    )


def _encoder_levels(shapes: dict[str, torch.Size]) -> tuple[list[list[int]], list[bool]]:
    """Output widths of the res blocks of each encoder level, and which downsamples are temporal."""
    blocks = sorted({int(m.group(1)) for k in shapes if (m := re.match(r"encoder\.down_blocks\.(\d+)\.", k))})
    levels, temporal, current = [], [], []
    for i in blocks:
        prefix = f"encoder.down_blocks.{i}."
        if prefix + "conv1.weight" in shapes:
            current.append(shapes[prefix + "conv1.weight"][0])
        elif prefix + "resample.1.weight" in shapes:
            levels.append(current)
            temporal.append(prefix + "time_conv.weight" in shapes)
            current = []
        else:
            raise CheckpointError(
                f"VAE encoder block {i} is neither a res block nor a downsample (attention?): unsupported"
            )
    levels.append(current)
    return levels, temporal


# --------------------------------------------------------------------------------------------
# wrapper
# --------------------------------------------------------------------------------------------
class WanVAE(FrozenEncoder):
    """``encode(video) -> normalised latents``, ``decode(latents) -> video`` (both float32)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        mean = getattr(model.config, "latents_mean", None) or WAN21_LATENT_MEAN
        std = getattr(model.config, "latents_std", None) or WAN21_LATENT_STD
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1, 1)

    @property
    def z_dim(self) -> int:
        return self.model.config.z_dim

    def set_tiling(self, enabled: bool) -> None:
        """Spatial tiling (diffusers) for large frames: less memory, slightly different borders."""
        if enabled:
            self.model.enable_tiling()
        else:
            self.model.disable_tiling()

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` in [-1, 1] -> ``(B, 16, 1 + (T-1)//4, H/8, W/8)`` normalised latents."""
        if video.dim() != 5 or video.shape[1] != 3 or video.shape[3] % 8 or video.shape[4] % 8:
            raise InputError(
                f"VAE input must be (B, 3, T, H, W) with H and W multiples of 8, got {tuple(video.shape)}"
            )
        posterior = self.model.encode(video.to(self.device, self.dtype)).latent_dist
        mu = posterior.mean.float()  # (B, 16, T', h, w), the mean as the reference
        return (mu - self.mean.to(mu.device)) / self.std.to(mu.device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised ``(B, 16, T', h, w)`` -> ``(B, 3, 1 + 4(T'-1), 8h, 8w)`` in [-1, 1]."""
        if latents.dim() != 5 or latents.shape[1] != self.z_dim:
            raise InputError(f"VAE latents must be (B, {self.z_dim}, T, h, w), got {tuple(latents.shape)}")
        z = latents.float().to(self.device)
        z = z * self.std.to(z.device) + self.mean.to(z.device)
        return self.model.decode(z.to(self.dtype)).sample.float().clamp_(-1.0, 1.0)


def load_vae(
    path: str | Path, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> WanVAE:
    """Load the Wan 2.1 VAE from any supported layout (see module docstring)."""
    from diffusers import AutoencoderKLWan

    path = Path(path)
    if path.is_dir():
        return _load_folder(path, device, dtype)
    source = open_checkpoint(path, prefixes=_PREFIXES)
    mapping = _key_map(source)
    kwargs = infer_vae_config({d: source.shape(s) for d, s in mapping.items()}, path)
    state: LazyStateDict = {d: (lambda s=s: source.get(s)) for d, s in mapping.items()}
    model = build_module(lambda: AutoencoderKLWan(**kwargs), state, source=path, device=device, dtype=dtype)
    check_materialized(model, path)
    logger.info("Wan VAE %s: base_dim %d, z_dim %d", path.name, kwargs["base_dim"], kwargs["z_dim"])
    return WanVAE(model)


def _load_folder(path: Path, device, dtype) -> WanVAE:
    from diffusers import AutoencoderKLWan

    folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"VAE folder {path} has no config.json (diffusers layout): pass the .pth/.safetensors file instead"
        )
    try:
        model = AutoencoderKLWan.from_pretrained(
            str(folder), torch_dtype=dtype or torch.float32, local_files_only=True
        )
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"VAE folder {folder} could not be loaded as diffusers AutoencoderKLWan ({exc})"
        ) from exc
    if model.config.z_dim != Z_DIM:
        raise CheckpointError(f"VAE folder {folder}: z_dim {model.config.z_dim} is not the Wan 2.1 VAE (16)")
    return WanVAE(model.to(device or "cpu").eval().requires_grad_(False))
