"""Read speed of a large compressed store: ``xr.open_zarr(...).compute()`` against a classical Zarr codec.

One 100 x 100-pixel block of a cube is encoded at the target rate; a Zarr
store of ``tiles`` x ``tiles`` such chunks (1000 x 1000 pixels for 10) is
written with that stream in every chunk (the chunks are copies: every chunk
decodes the same model, which is what a read costs), beside the tiled cube
written with Zarr's default codec (zstd, lossless). Each store is then read
through ``xr.open_zarr(...).compute()`` on Dask's threaded scheduler in a
fresh subprocess (imports included once), best of ``repeats``.

``xr-inr bench-read --data CUBE --bpppb 0.1 [--tiles 10] [--threads 2]``
prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

READ = """
import json, sys, time
import dask, xarray as xr
dask.config.set(scheduler="threads", num_workers=int(sys.argv[2]))
best = float("inf")
for _ in range(int(sys.argv[3])):
    start = time.perf_counter()
    values = xr.open_zarr(sys.argv[1], decode_coords="all", mask_and_scale=False)["cube"].compute().values
    best = min(best, time.perf_counter() - start)
print(json.dumps({"seconds": best, "shape": list(values.shape), "dtype": str(values.dtype)}))
"""


def _write(path: Path, cube: np.ndarray, chunks: tuple[int, ...], streams: bytes | None = None, **codecs) -> int:
    """A Zarr v3 array "cube" (in a group, with xarray's dimension names); with ``streams``, every
    chunk is those bytes (an xr-inr store). Returns the stored bytes of the array's chunks."""
    import zarr

    group = zarr.open_group(path, mode="w", zarr_format=3)
    array = group.create_array("cube", shape=cube.shape, chunks=chunks, dtype=cube.dtype,
                               dimension_names=("band", "y", "x"), fill_value=0, **codecs)
    if streams is None:
        array[:] = cube
    else:
        for index in np.ndindex(*array.cdata_shape):
            key = "cube/" + array.metadata.encode_chunk_key(index)
            zarr.core.sync.sync(group.store.set(key, zarr.core.buffer.default_buffer_prototype().buffer.from_bytes(streams)))
    zarr.consolidate_metadata(path)
    return sum(p.stat().st_size for p in (path / "cube" / "c").rglob("*") if p.is_file())


def _read_seconds(path: Path, threads: int, repeats: int) -> dict:
    result = subprocess.run([sys.executable, "-c", READ, str(path), str(threads), str(repeats)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def run(data: str, bpppb: float, tiles: int = 10, threads: int = 2, repeats: int = 3, steps: int | None = None) -> list[dict]:
    """One row per store: codec, stored bytes, bpppb, best read seconds."""
    from .. import INRCodec, INRZarrCodec
    from .datasets import load

    block = np.asarray(load(data).transpose("band", ...).values)[:, :100, :100]
    stream = INRCodec(bpppb=bpppb, steps=steps).encode(block)
    tiled = np.tile(block, (1, tiles, tiles))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        stores = {
            "xr-inr (grid)": lambda p: _write(p, tiled, block.shape, stream, serializer=INRZarrCodec(bpppb=bpppb),
                                              compressors=None),
            "zstd (Zarr default, lossless)": lambda p: _write(p, tiled, block.shape),
        }
        for name, write in stores.items():
            path = Path(folder) / f"{len(rows)}.zarr"
            nbytes = write(path)
            read = _read_seconds(path, threads, repeats)
            rows.append({"store": name, "nbytes": nbytes, "bpppb": 8 * nbytes / tiled.size, **read})
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="xr-inr bench-read", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a cube file (its top-left 100 x 100 pixels are used)")
    parser.add_argument("--bpppb", type=float, default=0.1)
    parser.add_argument("--tiles", type=int, default=10, help="chunks per side (default 10: 1000 x 1000 pixels)")
    parser.add_argument("--threads", type=int, default=2, help="Dask threads while reading (default 2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, help="fitting steps of the encoded block (default: the codec's)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = run(args.data, args.bpppb, args.tiles, args.threads, args.repeats, args.steps)
    print(f"| store | stored bytes | bpppb | read seconds (best of {args.repeats}, {args.threads} threads) |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['store']} | {row['nbytes']:,} | {row['bpppb']:.4f} | {row['seconds']:.2f} |")
    print(f"({time.perf_counter() - start:.0f} s in all; shape {rows[0]['shape']} {rows[0]['dtype']})")
    return rows
