"""Compress a cube on a dask.distributed cluster: one fit task per chunk, run on the workers.

    python examples/compress_distributed.py scene.tif scene.zarr --workers 4

A LocalCluster here; pass a Client(address) of a real cluster the same way
(or use ``xr-inr compress --scheduler ADDRESS``). Workers need xr-inr and torch.
"""

import argparse
import time

from distributed import Client, LocalCluster, get_task_stream

import xr_inr  # noqa: F401  (registers .inr)
from xr_inr.tools.datasets import load


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cube", help="a cube file (GeoTIFF, ENVI .hdr, .mat, .npz)")
    parser.add_argument("store")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bpppb", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--chunk", type=int, default=None)
    args = parser.parse_args(argv)

    cube = load(args.cube).rename("cube")
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        start = time.perf_counter()
        with get_task_stream(client) as tasks:
            small = cube.inr.compress(args.bpppb, chunks=args.chunk, steps=args.steps, progress=False)  # on client
        fitted_on = {t["worker"] for t in tasks.data if str(t["key"]).startswith("xr-inr-fit-")}
        small.inr.to_zarr(args.store)
    print(f"{small.data.npartitions} chunks fitted on {len(fitted_on)} workers in "
          f"{time.perf_counter() - start:.1f} s; {small.inr.nbytes} bytes, {small.inr.bpppb:.4f} bpppb")


if __name__ == "__main__":
    main()
