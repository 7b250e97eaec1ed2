"""Time the doctor takes to identify full-size 14B files from their headers.

    python bench/doctor_headers.py            # 3 repeats
    python bench/doctor_headers.py --repeats 10

1. Two sparse files of the published sizes are written to a temporary folder: the Wan 2.1 I2V 14B DiT
   (fp16, 32 GB) and the InfiniteTalk single adapter (fp16 with fp32 parts, 5.1 GB). Only their headers
   hold bytes; the rest is a hole.
2. Each repeat clears the doctor's per-file cache and times ``identify`` on both plus ``fit_adapter``.
3. Prints the best and the median seconds. Target: well under 1 s (the headers are about 0.2 MB).
   ``tests/unit/test_doctor.py`` checks the same calls read only the headers (bytes counted, not seconds).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from infinitetalk.config import DiTConfig  # noqa: E402
from infinitetalk.doctor import fit_adapter  # noqa: E402
from infinitetalk.loading import identify as identify_module  # noqa: E402
from infinitetalk.loading.dit import adapter_key_shapes, base_key_shapes  # noqa: E402
from infinitetalk.tiny.dit import mixed_fp32  # noqa: E402

ST_DTYPES = {torch.float16: "F16", torch.float32: "F32"}


def sparse_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], dtype_of) -> int:
    """The real header and no data (a sparse file of the full size); returns the size in bytes."""
    header, offset = {}, 0
    for key, shape in shapes.items():
        dtype = dtype_of(key, shape)
        n = math.prod(shape) * dtype.itemsize
        header[key] = {"dtype": ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        fh.truncate(8 + len(blob) + offset)
    return 8 + len(blob) + offset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dit = Path(tmp) / "wan2.1_i2v_480p_14B_fp16.safetensors"
        adapter = Path(tmp) / "wan2.1_infiniteTalk_single_fp16.safetensors"
        sizes = (
            sparse_safetensors(dit, base_key_shapes(DiTConfig()), lambda k, s: torch.float16),
            sparse_safetensors(
                adapter,
                adapter_key_shapes(DiTConfig()),
                lambda k, s: torch.float32 if mixed_fp32(k, s) else torch.float16,
            ),
        )
        seconds = []
        for _ in range(args.repeats):
            identify_module._identify_cached.cache_clear()
            start = time.perf_counter()
            identify_module.identify(dit), identify_module.identify(adapter)
            fit_adapter(dit, adapter, None)
            seconds.append(time.perf_counter() - start)
    print(f"files: {sizes[0] / 1e9:.1f} GB DiT + {sizes[1] / 1e9:.2f} GB adapter (sparse)")
    print(f"identify x2 + fit_adapter: best {min(seconds):.3f} s, median {statistics.median(seconds):.3f} s")


if __name__ == "__main__":
    main()
