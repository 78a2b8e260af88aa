"""Scaling over Dask workers, and the peak memory of compressing a large cube from a chunked source to Zarr.

The cube is a shared cube (default Jasper Ridge, 100 x 100 pixels, 198 bands)
tiled by reflection to the requested pixels and bands (float32), written
once as a plain chunked Zarr array (zstd) in a temporary folder: compressing
it reads it chunk by chunk, as a large scene on disk would be read. Every
measurement is one ``xr.open_zarr(source).cube.inr.to_zarr(out, bpppb, steps=..., effort=...)``
in a fresh subprocess (imports, and torch in every worker, loaded before the
clock starts), on

* the threaded scheduler (``dask.config`` ``num_workers``), or
* a ``dask.distributed`` ``LocalCluster(n_workers, threads_per_worker=1,
  processes=True)`` (its start-up not timed).

Scaling: a smaller cube of 8 chunks, timed with 1 and 2 workers on each;
the speedup is the 1-worker time over the 2-worker time. Memory: the large
cube on 2 worker processes, then a second size (the peak follows the chunk
and worker count, not the cube), then a small cube of larger chunks (two per
worker: the peak of the default chunk side, 128), each process's peak
resident set size read from Linux's ``VmHWM`` (``/proc/self/status``,
``client.run`` on each worker) at the end of its run, with the client's own
(a ``LocalCluster``'s scheduler and nannies run in the client's process).

The default chunks of the timed cubes are 64 x 64 pixels: with a short step
budget a 128 x 128 x 200 chunk took 20-40 times as long to fit as a 64 x 64
one (2026-11-26), which would make the 1024 x 1024 cube take about an hour
and a half on two cores.

``xr-inr bench-scale [--size 1024x1024] [--bands 200] [--steps 20] [--out results/scalebench.json]``
prints markdown tables and writes a JSON (machine, date, settings, rows); see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

DATA_ENV = "XR_INR_DATA"
DEFAULT_DATA = "jasper_ridge_100x100x198.npz"
REPO = Path(__file__).resolve().parents[2]

CHILD = "from xr_inr.tools.scalebench import _child; _child()"
SCHEDULERS = ("threads", "distributed", "distributed-notrim")
"""The threaded scheduler; a LocalCluster of worker processes as dask.distributed sets them up
(``MALLOC_TRIM_THRESHOLD_=65536`` in their environment, its ``pre-spawn-environ``); the same
without that setting."""
TASK_PREFIX = "xr-inr-fit-"
"""The keys of the fit tasks (``xr_inr.xarray_zarr.parallel.TASK_PREFIX``)."""


def default_data() -> Path:
    """The default cube: in $XR_INR_DATA, else ../shared/datasets beside the repository (as the tests look)."""
    folders = [Path(os.environ[DATA_ENV])] if os.environ.get(DATA_ENV) else []
    folders += [REPO.parent / "shared" / "datasets", Path.cwd().parent / "shared" / "datasets"]
    for folder in folders:
        if (folder / DEFAULT_DATA).exists():
            return folder / DEFAULT_DATA
    return folders[0] / DEFAULT_DATA


def _size(text: str) -> tuple[int, int]:
    """``1024x1024`` (height x width) or ``512`` (square)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"size {text!r}: give HEIGHTxWIDTH in pixels, e.g. 1024x1024")
    return parts[0], parts[1]


def _reflect(n: int, period: int) -> np.ndarray:
    """Indices 0..n-1 folded into 0..period-1 by reflection (0 1 .. p-1 p-1 .. 1 0 0 1 ..): no seams."""
    i = np.arange(n) % (2 * period)
    return np.where(i < period, i, 2 * period - 1 - i)


def base_cube(data: str | Path) -> np.ndarray:
    """The shared cube as (band, y, x) float32."""
    from .datasets import load

    return np.asarray(load(data).transpose("band", ...).values, dtype=np.float32)


def write_source(path: str | Path, base: np.ndarray, size: tuple[int, int], bands: int, chunk: int) -> dict:
    """Write ``base`` (band, y, x) tiled by reflection to ``bands`` x ``size`` as a Zarr v3 group holding
    "cube" (float32, zstd, chunks of all bands x ``chunk`` x ``chunk``), one row of chunks at a time.
    Returns the array's shape, chunks, raw and stored bytes."""
    import zarr

    height, width = size
    shape = (bands, height, width)
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    array = group.create_array("cube", shape=shape, chunks=(bands, chunk, chunk), dtype="float32",
                               dimension_names=("band", "y", "x"), fill_value=float("nan"),
                               compressors=zarr.codecs.ZstdCodec())
    band_index = _reflect(bands, base.shape[0])
    x_index = _reflect(width, base.shape[2])
    y_index = _reflect(height, base.shape[1])
    for top in range(0, height, chunk):
        rows = y_index[top:top + chunk]
        array[:, top:top + len(rows), :] = base[np.ix_(band_index, rows, x_index)]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(str(path))
    stored = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
    return {"shape": list(shape), "chunks": [bands, chunk, chunk], "raw_mb": math.prod(shape) * 4 / 2**20,
            "stored_mb": stored / 2**20, "n_chunks": math.ceil(height / chunk) * math.ceil(width / chunk)}


# -- what runs in each fresh subprocess ------------------------------------------------------


def peak_rss() -> dict:
    """This process's peak and current resident set size, MiB (Linux VmHWM / VmRSS; ru_maxrss elsewhere)."""
    values = {}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    values[key] = int(rest.split()[0]) / 1024  # kB
    except OSError:
        pass
    if "VmHWM" not in values:
        import resource

        values["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB
    return {"peak_rss_mb": values["VmHWM"], "rss_mb": values.get("VmRSS"), "pid": os.getpid()}


def malloc_trim_env() -> str | None:
    """This process's ``MALLOC_TRIM_THRESHOLD_`` (dask.distributed sets 65536 in its workers)."""
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def cpu_seconds() -> float:
    """CPU time of this process (all its threads) so far."""
    return time.process_time()


def _warm() -> int:
    """Load what the write's tasks import (torch and the grid fitting code for the fits; xarray, zarr and
    the writer's modules for the tasks that read and hash the chunks first), so no run's clock counts
    a worker's imports: without the second, a fresh worker's first task imported xarray inside the
    timed write (0.7 s with one worker process, 1.0 s with two)."""
    import torch

    from ..methods.grid import fitting  # noqa: F401
    from ..xarray_zarr import parallel, store  # noqa: F401  (xarray, zarr)

    return torch.get_num_threads()


def compress(source: str, out: str, *, scheduler: str, workers: int, bpppb: float, steps: int | None,
             effort: str = "default") -> dict:
    """One timed ``xr.open_zarr(source).cube.inr.to_zarr(out, ...)`` on ``workers`` threads (``"threads"``)
    or worker processes (``"distributed"``), ``steps`` None: the ``effort``'s own; run it in a fresh process
    (see :func:`run_child`)."""
    import dask
    import xarray as xr

    import xr_inr
    from ..xarray_zarr import store

    _warm()
    timings = {}
    fingerprint = store._fingerprint

    def timed_fingerprint(*args, **kwargs):  # the pass that hashes the input for resuming, timed apart
        start = time.perf_counter()
        try:
            return fingerprint(*args, **kwargs)
        finally:
            timings["fingerprint_s"] = time.perf_counter() - start

    store._fingerprint = timed_fingerprint
    row = {"scheduler": scheduler, "workers": workers, "source": source}
    client = cluster = None
    if scheduler in SCHEDULERS[1:]:
        from distributed import Client, LocalCluster, get_task_stream

        if scheduler == "distributed-notrim":  # the workers keep glibc's own malloc thresholds
            dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})
            os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)

        start = time.perf_counter()
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=40)
        client = Client(cluster)
        client.run(_warm)
        row["worker_malloc_trim"] = sorted(set(client.run(malloc_trim_env).values()), key=str)
        row["startup_s"] = time.perf_counter() - start
    elif scheduler == "threads":
        dask.config.set(scheduler="threads", num_workers=workers)
    else:
        raise ValueError(f"scheduler {scheduler!r}: one of {SCHEDULERS}")
    try:
        cube = xr.open_zarr(source)["cube"]
        row.update(shape=list(cube.shape), chunk_shape=list(cube.data.chunksize),
                   n_chunks=math.prod(cube.data.numblocks))
        workers_cpu = client.run(cpu_seconds) if client is not None else {}
        client_cpu = cpu_seconds()
        start = time.perf_counter()
        if client is not None:
            with get_task_stream(client) as stream:
                out_cube = cube.inr.to_zarr(out, bpppb, steps=steps, effort=effort, progress=False)
            fits, fit_seconds = {}, []
            for task in stream.data:
                if str(task["key"]).startswith(TASK_PREFIX):
                    fits[task["worker"]] = fits.get(task["worker"], 0) + 1
                    fit_seconds += [s["stop"] - s["start"] for s in task["startstops"] if s["action"] == "compute"]
        else:
            with _FitTimes() as times:
                out_cube = cube.inr.to_zarr(out, bpppb, steps=steps, effort=effort, progress=False)
            fit_seconds = times.seconds
        row["seconds"] = time.perf_counter() - start
        row.update(timings)
        # CPU seconds the run took (the client's, plus each worker's): over the wall time, how many
        # cores it kept busy; a fit's wall time grows when it waits (for the GIL, or for a core)
        row["cpu_s"] = {"client": cpu_seconds() - client_cpu,
                        "workers": [cpu - workers_cpu[w] for w, cpu in sorted(client.run(cpu_seconds).items())]
                        if client is not None else []}
        row["cores_busy"] = (row["cpu_s"]["client"] + sum(row["cpu_s"]["workers"])) / row["seconds"]
        row["fit_s"] = sorted(fit_seconds)
        row["fit_s_mean"] = sum(fit_seconds) / len(fit_seconds) if fit_seconds else None
        if client is not None:
            row["fits_per_worker"] = sorted(fits.values(), reverse=True)
            row["worker_rss"] = sorted(client.run(peak_rss).values(), key=lambda r: r["pid"])
        row["stored_bpppb"] = out_cube.inr.bpppb
        row["verified"] = xr_inr.verify(out).ok
    finally:
        if client is not None:
            client.close()
            cluster.close()
    row["client_rss"] = peak_rss()
    return row


class _FitTimes:
    """The wall time of each fit task of the local scheduler (a dask callback)."""

    def __init__(self):
        from dask.callbacks import Callback

        self.seconds, started = [], {}

        def pretask(key, dsk, state):
            if str(key).startswith(TASK_PREFIX):
                started[key] = time.perf_counter()

        def posttask(key, result, dsk, state, worker_id):
            if key in started:
                self.seconds.append(time.perf_counter() - started.pop(key))

        self._callback = Callback(pretask=pretask, posttask=posttask)

    def __enter__(self):
        self._callback.__enter__()
        return self

    def __exit__(self, *exc):
        self._callback.__exit__(*exc)


def _child() -> None:
    job = json.loads(sys.argv[1])
    print("RESULT " + json.dumps(compress(**job)))


def run_child(job: dict, timeout: float | None = None) -> dict:
    """:func:`compress` in a fresh Python process (this repository first on its path, and its workers')."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.setdefault(var, "1")
    result = subprocess.run([sys.executable, "-c", CHILD, json.dumps(job)], capture_output=True, text=True,
                            env=env, timeout=timeout, cwd=str(REPO))
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"the measurement {job} failed (status {result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# -- the benchmark ---------------------------------------------------------------------------


def scaling(source: str, folder: Path, *, schedulers=("threads", "distributed"), workers=(1, 2), bpppb: float,
            steps: int | None, effort: str = "default", rows: list | None = None, on_row=None) -> list[dict]:
    """Each scheduler with each worker count on ``source``; ``speedup``: the 1-worker time over this one.
    Rows are appended to ``rows`` (a new list by default), ``on_row()`` called after each."""
    rows = [] if rows is None else rows
    for scheduler in schedulers:
        for n in workers:
            out = folder / f"scale-{scheduler}-{n}.zarr"
            row = run_child(dict(source=source, out=str(out), scheduler=scheduler, workers=n, bpppb=bpppb,
                                 steps=steps, effort=effort))
            first = next((r for r in rows if r["scheduler"] == scheduler and r["workers"] == workers[0]), row)
            row["speedup"] = first["seconds"] / row["seconds"]
            rows.append(row)
            if on_row is not None:
                on_row()
    return rows


def memory(sources: list[str], folder: Path, *, scheduler: str = "distributed", workers: int = 2,
           bpppb: float, steps: int | None, effort: str = "default", rows: list | None = None,
           on_row=None) -> list[dict]:
    """The peak RSS of each worker process and of the client, compressing each source (rows as :func:`scaling`)."""
    rows = [] if rows is None else rows
    for i, source in enumerate(sources):
        rows.append(run_child(dict(source=source, out=str(folder / f"memory-{i}.zarr"), scheduler=scheduler,
                                   workers=workers, bpppb=bpppb, steps=steps, effort=effort)))
        if on_row is not None:
            on_row()
    return rows


def machine() -> dict:
    import dask
    import torch
    import zarr

    from .bench import cpu_model

    info = {"platform": platform.platform(), "machine": platform.machine(), "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__, "dask": dask.__version__,
            "zarr": zarr.__version__, "torch": torch.__version__}
    try:
        import distributed

        info["distributed"] = distributed.__version__
    except ImportError:
        info["distributed"] = None
    try:
        with open("/proc/meminfo") as meminfo:
            info["memory_gb"] = round(int(meminfo.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        info["load_average"] = list(os.getloadavg())
    except OSError:
        pass
    return info


def _commit() -> str | None:
    """The repository's commit (with ``+changes`` when its files differ from it), else None."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=REPO, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


def run(data: str | Path | None = None, *, size=(1024, 1024), bands: int = 200, chunk: int = 64,
        scale_size=(128, 256), scale_chunk: int | None = None, compare_size=(512, 512),
        large_chunk: int | None = 128, bpppb: float = 0.1, steps: int = 20, scale_steps: int | None = 100,
        effort: str = "default", workers: int = 2,
        schedulers=("threads", "distributed"),
        memory_scheduler: str = "distributed", memory_workers: int | None = None, do_scaling: bool = True,
        do_memory: bool = True, folder: str | Path | None = None, on_row=None) -> dict:
    """The whole benchmark; returns the report (machine, date, settings, source cubes, scaling, memory rows).
    ``scale_steps`` None: the ``effort``'s own steps.

    on_row : called as ``on_row(report)`` after each measurement (the report so far)."""
    data = Path(data) if data is not None else default_data()
    memory_workers = workers if memory_workers is None else memory_workers
    scale_chunk = chunk if scale_chunk is None else scale_chunk
    base = base_cube(data)
    settings = {"data": str(data), "size": list(size), "bands": bands, "chunk": chunk,
                "scale_size": list(scale_size), "scale_chunk": scale_chunk,
                "compare_size": list(compare_size) if compare_size else None, "large_chunk": large_chunk,
                "bpppb": bpppb, "steps": steps, "scale_steps": scale_steps, "effort": effort, "workers": workers,
                "schedulers": list(schedulers), "memory_scheduler": memory_scheduler, "memory_workers": memory_workers,
                "threads_per_worker": 1, "torch_threads": 1}
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "commit": _commit(), "machine": machine(), "settings": settings, "sources": {}, "scaling": [],
              "memory": []}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xr-inr-scalebench-", dir=folder) as tmp:
        tmp = Path(tmp)

        def source(shape, side) -> str:
            name = f"source-{shape[0]}x{shape[1]}x{bands}-{side}.zarr"
            if name not in report["sources"]:
                report["sources"][name] = write_source(tmp / name, base, shape, bands, side)
            return str(tmp / name)

        def done():
            if on_row is not None:
                on_row(report)

        if do_scaling:
            scaling(source(scale_size, scale_chunk), tmp, schedulers=schedulers,
                    workers=tuple(sorted({1, workers})), bpppb=bpppb, steps=scale_steps, effort=effort,
                    rows=report["scaling"], on_row=done)
        if do_memory:
            sizes = [(size, chunk)] + ([(compare_size, chunk)] if compare_size and tuple(compare_size) != tuple(size)
                                       else [])
            if large_chunk:  # two chunks of the larger side per worker
                sizes.append(((2 * large_chunk, memory_workers * large_chunk), large_chunk))
            memory([source(*s) for s in sizes], tmp, scheduler=memory_scheduler, workers=memory_workers,
                   bpppb=bpppb, steps=steps, effort=effort, rows=report["memory"], on_row=done)
    report["seconds"] = time.perf_counter() - start
    return report


def markdown(report: dict) -> str:
    """The report's tables."""
    settings = report["settings"]
    lines = []
    if report["scaling"]:
        shape = report["scaling"][0]["shape"]
        steps = settings["scale_steps"] or "the effort's"
        lines += [f"Scaling: {shape[0]} bands x {shape[1]} x {shape[2]} pixels, "
                  f"{report['scaling'][0]['n_chunks']} chunks of {settings['scale_chunk']} x {settings['scale_chunk']} "
                  f"pixels, {steps} steps, {settings['effort']} effort, "
                  f"{settings['bpppb']} bpppb", "",
                  "| scheduler | workers | to_zarr seconds | of which fingerprint s | speedup over 1 worker "
                  "| fits per worker | mean fit s | cores busy |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in report["scaling"]:
            fits = ", ".join(map(str, row.get("fits_per_worker", []))) or "–"
            lines.append(f"| {row['scheduler']} | {row['workers']} | {row['seconds']:.1f} "
                         f"| {row.get('fingerprint_s', math.nan):.2f} | {row['speedup']:.2f}× | {fits} "
                         f"| {row['fit_s_mean'] or math.nan:.1f} | {row['cores_busy']:.2f} |")
        lines.append("")
    if report["memory"]:
        lines += [f"Memory: {settings['steps']} steps, {settings['effort']} effort, {settings['bpppb']} bpppb", "",
                  "| cube | raw MiB | chunks | chunk | scheduler | workers | to_zarr seconds | of which fingerprint s "
                  "| peak RSS of each worker (MiB) | client peak (MiB) | verified |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in report["memory"]:
            shape = row["shape"]
            raw = math.prod(shape) * 4 / 2**20
            each = ", ".join(f"{r['peak_rss_mb']:.0f}" for r in row.get("worker_rss", [])) or "–"
            side = "×".join(map(str, row["chunk_shape"]))
            lines.append(f"| {shape[0]}×{shape[1]}×{shape[2]} | {raw:.1f} | {row['n_chunks']} | {side} "
                         f"| {row['scheduler']} "
                         f"| {row['workers']} | {row['seconds']:.1f} | {row.get('fingerprint_s', math.nan):.2f} "
                         f"| {each} "
                         f"| {row['client_rss']['peak_rss_mb']:.0f} | {row['verified']} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="xr-inr bench-scale", description=__doc__.splitlines()[0])
    parser.add_argument("--data", help=f"the cube to tile (default: {DEFAULT_DATA} in ${DATA_ENV}, "
                                       "else ../shared/datasets beside the repository)")
    parser.add_argument("--size", type=_size, default=(1024, 1024),
                        help="pixels of the memory cube, HEIGHTxWIDTH (default 1024x1024)")
    parser.add_argument("--compare-size", type=_size, default=(512, 512),
                        help="a second, smaller memory cube (default 512x512)")
    parser.add_argument("--large-chunk", type=int, default=128,
                        help="one more memory run with chunks of this side, two per worker (default 128; 0: none)")
    parser.add_argument("--no-compare", action="store_true", help="measure the memory of --size only")
    parser.add_argument("--bands", type=int, default=200, help="bands, cropped or tiled by reflection (default 200)")
    parser.add_argument("--chunk", type=int, default=64,
                        help="chunk side in pixels of the memory cubes, all bands (default 64)")
    parser.add_argument("--scale-size", type=_size, default=(128, 256),
                        help="pixels of the scaling cube (default 128x256: 8 chunks of 64 x 64)")
    parser.add_argument("--scale-chunk", type=int, help="chunk side of the scaling cube (default: --chunk)")
    parser.add_argument("--bpppb", type=float, default=0.1, help="bits per pixel per band (default 0.1)")
    parser.add_argument("--steps", type=int, default=20, help="fitting steps per chunk, memory runs (default 20)")
    parser.add_argument("--scale-steps", type=int, default=100,
                        help="fitting steps per chunk, scaling runs (default 100; 0: the effort's own)")
    parser.add_argument("--effort", choices=("fast", "default", "best"), default="default",
                        help="the codec's effort, every run (default: default)")
    parser.add_argument("--workers", type=int, default=2,
                        help="workers compared with 1, and of the memory runs (default 2)")
    parser.add_argument("--schedulers", default="threads,distributed",
                        help="scaling runs, comma-separated: threads, distributed, distributed-notrim (workers "
                             "without dask's MALLOC_TRIM_THRESHOLD_=65536) (default threads,distributed)")
    parser.add_argument("--memory-scheduler", choices=SCHEDULERS, default="distributed",
                        help="scheduler of the memory runs (default distributed)")
    parser.add_argument("--memory-workers", type=int, help="workers of the memory runs (default: --workers)")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--tmp", help="folder for the temporary stores (default: the system's)")
    parser.add_argument("--out", default="results/scalebench.json",
                        help="the JSON to write (default results/scalebench.json)")
    args = parser.parse_args(argv)
    schedulers = tuple(s.strip() for s in args.schedulers.split(",") if s.strip())
    unknown = set(schedulers) - set(SCHEDULERS)
    if unknown:
        parser.error(f"--schedulers: unknown {sorted(unknown)}; use {', '.join(SCHEDULERS)}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(report):  # after each measurement: an interrupted run keeps what it measured
        out.write_text(json.dumps(report, indent=1) + "\n")
        kind, row = ("memory", report["memory"][-1]) if report["memory"] else ("scaling", report["scaling"][-1])
        print(f"{kind}: {row['scheduler']} x {row['workers']}, {row['n_chunks']} chunks: {row['seconds']:.1f} s",
              file=sys.stderr, flush=True)
    report = run(args.data, size=args.size, bands=args.bands, chunk=args.chunk, scale_size=args.scale_size,
                 scale_chunk=args.scale_chunk,
                 compare_size=None if args.no_compare else args.compare_size, large_chunk=args.large_chunk,
                 bpppb=args.bpppb, steps=args.steps,
                 scale_steps=args.scale_steps or None, effort=args.effort, workers=args.workers,
                 schedulers=schedulers,
                 memory_scheduler=args.memory_scheduler, memory_workers=args.memory_workers,
                 do_scaling=not args.skip_scaling, do_memory=not args.skip_memory, folder=args.tmp, on_row=save)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))
    print(f"({report['seconds']:.0f} s in all; {report['machine']['cpu_count']} CPUs; wrote {out})")
    return report
