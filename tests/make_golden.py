"""Write the golden streams of tests/fixtures/golden/ and their manifest (run by hand, never by the suite).

Run it only when the stream format changes on purpose: the streams pin what
every decoder must output (tests/test_golden.py compares the sha256 of the
decoded arrays; SIREN streams, whose float32 decoder is not bit-exact across
BLAS kernels, against the arrays in siren_reference.npz within a tolerance).
Version-1 streams (xr-inr 0.1.0) and version-2 streams (xr-inr 0.2) and their
entries are kept as they were; versions 3 and 4 changed the grid payload only, so
their grid streams are written beside them, named ``v3_<name>`` and ``v4_<name>``.
"""

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from xr_inr import INRCodec, decode_block
from xr_inr.core.stream import VERSION

HERE = Path(__file__).parent / "fixtures"
GOLDEN = HERE / "golden"


def digest(array: np.ndarray) -> dict:
    return {"sha256": hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest(),
            "shape": list(array.shape), "dtype": str(array.dtype)}


def blocks() -> dict:
    """name: (codec options, block, encode_block keywords) on the committed Jasper Ridge crop."""
    crop = np.load(HERE / "jasper_ridge_crop_40x40x40.npz")["cube"].transpose(2, 0, 1)[::2, :24, :20].copy()
    reflectance = (crop / 1e4).astype(np.float32)
    holed = reflectance.copy()
    holed[:, 5:9, 3:7] = np.nan
    holed[3, 12, 12] = np.nan
    siren = dict(method="siren", steps=60, search_steps=0, lr=3e-3, depth=2)
    return {
        "grid_uint16": (dict(bpppb=2.0, steps=60), crop, {}),  # a synthesis MLP and four latent levels
        "grid_float32": (dict(bpppb=0.5, steps=60), reflectance, {}),
        "grid_edge_padded": (dict(bpppb=0.5, steps=60), crop[:, :16, :12], dict(padded_shape=crop.shape, fill_value=0)),
        "grid_nan": (dict(bpppb=0.5, steps=60), holed, {}),
        "siren_uint16": (dict(bpppb=0.5, **siren), crop, {}),
        "siren_float32": (dict(bpppb=0.5, **siren), reflectance, {}),
        "raw_uint16": (dict(bpppb=0.5), crop[:, :2, :2], {}),
        "constant_uint16": (dict(bpppb=0.5), np.full((4, 3, 3), 7, np.uint16), {}),
    }


def main():
    torch.set_num_threads(1)
    manifest_path, reference_path = GOLDEN / "manifest.json", GOLDEN / "siren_reference.npz"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    references = dict(np.load(reference_path)) if reference_path.exists() else {}
    for name, (options, block, keywords) in blocks().items():
        if not name.startswith("grid"):
            continue
        name = f"v{VERSION}_{name}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the raw block is over budget on purpose
            stream = INRCodec(**options).encode_block(block, **keywords)
        (GOLDEN / f"{name}.xinr").write_bytes(stream)
        decoded = decode_block(stream)
        manifest[name] = {"version": VERSION, "exact": not name.startswith("siren"), **digest(decoded)}
        if name.startswith("siren"):
            references[name] = decoded
        print(name, len(stream), "bytes")
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    np.savez_compressed(reference_path, **references)


if __name__ == "__main__":
    main()
