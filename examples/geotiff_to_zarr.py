"""A GeoTIFF to a compressed Zarr store, then reopened lazily: only the chunks a read touches are decoded.

    python examples/geotiff_to_zarr.py scene.tif scene.zarr --bpppb 0.05

The CRS, transform, dtype and (from per-band ``wavelength`` metadata, as ENVI
gives them) the wavelengths are kept.
"""

import argparse

import xr_inr
from xr_inr.core.decode import decode_counter
from xr_inr.tools.datasets import load


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tif")
    parser.add_argument("store")
    parser.add_argument("--bpppb", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=None, help="fitting steps per chunk (default: the codec's)")
    parser.add_argument("--chunk", type=int, default=None, help="spatial chunk side (default: up to 128)")
    args = parser.parse_args(argv)

    cube = load(args.tif).rename("cube")  # read with rioxarray: (band, y, x), CRS and transform kept
    cube.inr.to_zarr(args.store, args.bpppb, chunks=args.chunk, steps=args.steps, progress=False)

    decode_counter.reset()
    back = xr_inr.open_zarr(args.store)["cube"]  # lazy: nothing decoded yet
    print(f"reopened {dict(back.sizes)} {back.dtype}, CRS {back.rio.crs}, {back.inr.bpppb:.4f} bpppb stored; "
          f"chunks decoded on opening: {decode_counter.blocks}")
    corner = back.isel(y=slice(0, 8), x=slice(0, 8)).values
    print(f"an 8 x 8 corner {corner.shape}: {decode_counter.blocks} of {back.data.npartitions} chunks decoded")


if __name__ == "__main__":
    main()
