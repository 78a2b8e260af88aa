"""Compress to a quality target instead of a rate: every chunk at least PSNR dB, as few bytes as found.

    python examples/quality_target.py                                # the committed 40 x 40 x 40 crop, 40 dB
    python examples/quality_target.py --psnr 45 --steps 200 --store /tmp/q.zarr

``.inr.compress(psnr=...)`` searches each chunk's rate (several fits per chunk:
``xr_inr.core.quality``) and records what each chunk achieved; this script prints
it per chunk, with the whole cube's PSNR, which is at least the target when every
chunk meets it (docs/zarr.md, "Quality targets"). With ``--store`` it writes the
store and prints ``xr-inr info``.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import xarray as xr

import xr_inr
from xr_inr import cli
from xr_inr.metrics import psnr

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "jasper_ridge_crop_40x40x40.npz"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=FIXTURE, help="a .npz holding `cube` as (y, x, band)")
    parser.add_argument("--psnr", type=float, default=40.0, help="the target in dB (default 40)")
    parser.add_argument("--steps", type=int, default=50, help="fitting steps of each encode (default 50)")
    parser.add_argument("--chunk", type=int, default=20, help="spatial chunk side (default 20)")
    parser.add_argument("--crop", type=int, help="keep the top-left CROP x CROP pixels only")
    parser.add_argument("--store", type=Path, help="also write this Zarr store and describe it")
    args = parser.parse_args(argv)

    values = np.load(args.data)["cube"].transpose(2, 0, 1)  # (band, y, x)
    if args.crop:
        values = values[:, : args.crop, : args.crop]
    cube = xr.DataArray(values, dims=("band", "y", "x"), name="cube")
    print(f"{args.data.name}: {dict(cube.sizes)} {cube.dtype}, target {args.psnr:g} dB per chunk, "
          f"{args.steps} steps per encode")
    start = time.perf_counter()
    compressed = cube.inr.compress(psnr=args.psnr, chunks=args.chunk, steps=args.steps, progress=False)
    seconds = time.perf_counter() - start
    chunks = compressed.inr.inspect_chunks()
    for index, info in chunks.items():
        print(f"  chunk {index}: {info['psnr']:.2f} dB, {info['bpppb']:.3f} bpppb, {info['encodes']} encodes")
    encodes = sum(info["encodes"] for info in chunks.values())
    print(f"{len(chunks)} chunks, {encodes} encodes in {seconds:.1f} s: {compressed.inr.bpppb:.3f} bpppb")
    print(f"cube PSNR {psnr(cube.values, compressed.values):.2f} dB (R = max - min of the whole cube; "
          f"at least {args.psnr:g} dB when every chunk meets it)")
    if args.store is not None:
        compressed.inr.to_zarr(args.store, mode="w")
        cli.main(["info", str(args.store)])
        assert xr_inr.open_zarr(args.store)["cube"].inr.inspect_chunks().keys() == chunks.keys()


if __name__ == "__main__":
    main()
