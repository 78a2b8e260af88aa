"""Compress a real hyperspectral cube to Zarr with the accessor, then read it back lazily.

    .venv/bin/python examples/compress_to_zarr.py                 # Jasper Ridge, 0.1 bpppb, 4 chunks
    .venv/bin/python examples/compress_to_zarr.py --bpppb 0.05 --steps 500 --store /tmp/jr.zarr

The cube comes from the shared datasets folder ($XR_INR_DATA, else
../shared/datasets beside the repository). Compression fits one model per
chunk (the codec's default "grid" method, or ``--method siren``), the chunks
in parallel (Dask threads); the store is then reopened in a
fresh Python process, which reports the stored rate, the PSNR against the
original and how many chunks each read decoded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

REPO = Path(__file__).resolve().parent.parent


def load_cube(path: Path) -> xr.DataArray:
    """A shared .npz cube as a (band, y, x) DataArray; loaded with xr_inr.tools.datasets."""
    from xr_inr.tools.datasets import load

    cube = load(path)
    return cube.rename(path.stem)


def compress_and_write(args) -> None:
    import xr_inr  # noqa: F401  (registers the .inr accessor)

    cube = load_cube(args.data)
    print(f"{args.data.name}: {dict(cube.sizes)} {cube.dtype}")
    start = time.perf_counter()
    options = {"search_steps": args.search_steps, "depth": args.depth or None} if args.method == "siren" else {}
    compressed = cube.inr.compress(args.bpppb, chunks={"y": args.chunk, "x": args.chunk}, method=args.method,
                                   steps=args.steps, lr=args.lr, progress=not args.quiet, **options)
    fit_s = time.perf_counter() - start
    print(f"fitted {compressed.data.npartitions} chunks in {fit_s:.1f} s: "
          f"{compressed.inr.nbytes} bytes, {compressed.inr.bpppb:.4f} bpppb (target {args.bpppb})")
    compressed.inr.to_zarr(args.store, mode="w")
    print(f"wrote {args.store} (Zarr format 3), no refit")


READER = """
import json, sys, time
import numpy as np
import xarray as xr

store, data = sys.argv[1], sys.argv[2]
start = time.perf_counter()
ds = xr.open_zarr(store)                 # plain xarray: the xr_inr codec comes from its entry point
var = ds[list(ds.data_vars)[0]]
open_s = time.perf_counter() - start
import xr_inr, xr_inr.tools.datasets   # only now: the counter, the stored size, the original
counter = xr_inr.core.decode.decode_counter
report = {"opened_chunks_decoded": counter.blocks, "chunks": var.data.npartitions, "open_s": open_s}
counter.reset()
var.isel(y=slice(0, 10), x=slice(0, 10)).values
report["region_chunks_decoded"] = counter.blocks
counter.reset()
start = time.perf_counter()
decoded = var.values
report["full_read_s"] = time.perf_counter() - start
report["full_chunks_decoded"] = counter.blocks
original = xr_inr.tools.datasets.load(data).values.astype(np.float64)
mse = np.mean((original - decoded) ** 2)
report["psnr_db"] = 10 * np.log10(np.ptp(original) ** 2 / mse)
report["bpppb"] = xr_inr.open_zarr(store)[var.name].inr.bpppb
counter.reset()
start = time.perf_counter()
preview = xr_inr.open_zarr(store, scale=0.25)[var.name].values
report["preview_shape"] = list(preview.shape)
report["preview_s"] = time.perf_counter() - start
report["preview_values_evaluated"] = counter.values
report["torch_imported"] = "torch" in sys.modules
print(json.dumps(report))
"""


def read_in_fresh_process(args) -> dict:
    result = subprocess.run([sys.executable, "-c", READER, str(args.store), str(args.data)], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        sys.exit(result.stderr)
    return json.loads(result.stdout)


def main(argv=None) -> None:
    data_dir = Path(os.environ.get("XR_INR_DATA") or REPO.parent / "shared" / "datasets")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=data_dir / "jasper_ridge_100x100x198.npz")
    parser.add_argument("--store", type=Path, default=None, help="Zarr store to write (default: a temporary one)")
    parser.add_argument("--bpppb", type=float, default=0.1)
    parser.add_argument("--chunk", type=int, default=50, help="spatial chunk side (all bands in each chunk)")
    parser.add_argument("--method", choices=("grid", "siren"), default="grid")
    parser.add_argument("--steps", type=int, default=None, help="fitting steps (default: the codec's)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the codec's)")
    parser.add_argument("--search-steps", type=int, default=0, help="siren: architecture search steps (0: no search)")
    parser.add_argument("--depth", type=int, default=3, help="siren: network depth (0: widest net of depth 5)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not args.data.exists():
        sys.exit(f"{args.data} not found (set $XR_INR_DATA)")
    with tempfile.TemporaryDirectory() as tmp:
        if args.store is None:
            args.store = Path(tmp) / "cube.zarr"
        compress_and_write(args)
        report = read_in_fresh_process(args)
    print(f"fresh process: opening decoded {report['opened_chunks_decoded']} of {report['chunks']} chunks; "
          f"a 10 x 10 pixel region decoded {report['region_chunks_decoded']}; "
          f"the whole cube {report['full_chunks_decoded']} in {report['full_read_s']:.2f} s")
    print(f"bpppb {report['bpppb']:.4f}   PSNR {report['psnr_db']:.2f} dB")
    print(f"quarter-resolution preview {tuple(report['preview_shape'])} in {report['preview_s']:.2f} s, "
          f"{report['preview_values_evaluated']} values evaluated; torch imported by the reader: "
          f"{report['torch_imported']}")


if __name__ == "__main__":
    main()
