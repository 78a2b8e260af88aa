"""Chunks per second of batched fits (what the accessor runs on a GPU) against one chunk at a time on the CPU.

The cube is cut into ``size`` x ``size``-pixel chunks, made up to ``count`` with
flipped and transposed copies of them (other chunks for the fit, one
architecture). They are encoded with :func:`xr_inr.core.encode.encode_blocks`
in batches of ``batch`` (each of the sizes given, one after the other) on
``device`` (CUDA when present; torch's threads as they are set, e.g. by
``OMP_NUM_THREADS``), after one untimed warm-up batch of 10 steps at the fast effort
(CUDA's start-up), then one at a time on the CPU with one torch
thread: the CPU path of ``compress``, per worker (the first ``cpu_count`` chunks
only, when given: a rate, cheaper to measure). Both in this process, one
after the other. Printed: chunks per second of each, their ratio, each
path's median PSNR over the chunks (R = max - min of each chunk's values), and
where each path's seconds went: setting up the fits (PCA, coefficient step),
training, and packing within budget (the rest: picking the architecture,
headers); CUDA is synchronised around each.

``xr-inr bench-batch --data CUBE [--bpppb 0.1] [--size 50] [--count 16] [--batch 16[,64...]]
[--cpu-count N] [--device cuda] [--effort default] [--out result.json]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import numpy as np


def chunks_of(cube: np.ndarray, size: int, count: int) -> list[np.ndarray]:
    """``count`` (bands, size, size) chunks: the cube's tiles, then flipped and transposed copies."""
    bands, h, w = cube.shape
    if size > min(h, w):
        raise ValueError(f"chunks of {size} pixels do not fit a {h} x {w} cube")
    tiles = [cube[:, y:y + size, x:x + size] for y in range(0, h - size + 1, size) for x in range(0, w - size + 1, size)]
    views = [lambda t: t, lambda t: t[:, ::-1], lambda t: t[:, :, ::-1], lambda t: t.transpose(0, 2, 1)]
    out = [np.ascontiguousarray(view(tile)) for view in views for tile in tiles]
    while len(out) < count:
        out += out
    return out[:count]


@contextlib.contextmanager
def _phases(seconds: dict[str, float]):
    """Add the seconds spent in the grid fit's set-up, training and packing to ``seconds`` while open."""
    import torch

    from ..methods.grid import fitting

    def timed(name, function):
        def wrapper(*args, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
        return wrapper

    originals = {"__init__": fitting.GridTraining.__init__, "train": fitting.GridTraining.train,
                 "pack_within_budget": fitting.pack_within_budget}
    fitting.GridTraining.__init__ = timed("setup", originals["__init__"])
    fitting.GridTraining.train = timed("training", originals["train"])
    fitting.pack_within_budget = timed("packing", originals["pack_within_budget"])
    try:
        yield seconds
    finally:
        fitting.GridTraining.__init__, fitting.GridTraining.train = originals["__init__"], originals["train"]
        fitting.pack_within_budget = originals["pack_within_budget"]


def _encode(codec, chunks: list[np.ndarray], batch: int) -> tuple[float, list[bytes], dict[str, float]]:
    from ..core.encode import encode_blocks

    streams: list[bytes] = []
    with _phases({}) as phases:
        start = time.perf_counter()
        for i in range(0, len(chunks), batch):
            streams += [stream for stream, _ in encode_blocks(codec, chunks[i:i + batch])]
        elapsed = time.perf_counter() - start
    return elapsed, streams, phases


def _median_psnr(chunks: list[np.ndarray], streams: list[bytes]) -> float:
    from .. import decode_block
    from ..metrics import psnr

    return float(np.median([psnr(chunk, decode_block(stream)) for chunk, stream in zip(chunks, streams, strict=True)]))


def _log(log, what: str, chunks: int, seconds: float, phases: dict[str, float]) -> None:
    if log is not None:
        log(f"{what}: {chunks} chunks in {seconds:.1f} s, {chunks / seconds:.3f} chunks/s; seconds "
            + ", ".join(f"{name} {value:.1f}" for name, value in phases.items()), flush=True)


def run(data: str, bpppb: float = 0.1, size: int = 50, count: int = 16, batches: tuple[int, ...] = (16,),
        device: str | None = None, effort: str = "default", steps: int | None = None,
        cpu_count: int | None = None, log=None) -> dict:
    """One CPU measurement and one batched one per size in ``batches``, all of the same ``count`` chunks;
    ``log`` (e.g. ``print``), if given, is called with a line as each is done (a run cut short keeps them)."""
    import torch

    from ..core.codec import INRCodec
    from .datasets import load

    cube = np.asarray(load(data).transpose("band", ...).values)
    chunks = chunks_of(cube, size, count)
    cpu_chunks = chunks[:cpu_count or count]
    options = dict(bpppb=bpppb, effort=effort, steps=steps)
    batched = INRCodec(**options, device=device)
    previous = torch.get_num_threads()
    runs = []
    try:
        # CUDA's start-up, not timed, at the fast effort: the default's packing of 10-step fits (6 rounding
        # passes) took 7.8 s for four 100 x 100 blocks on the 2-core machine, the fast effort's 1.8 s
        warm_up = INRCodec(**{**options, "steps": 10, "effort": "fast"}, device=device)
        _encode(warm_up, chunks[:max(batches)], max(batches))
        for batch in batches:
            seconds, streams, phases = _encode(batched, chunks, batch)
            runs.append({"batch": batch, "batched_s": seconds, "batched_chunks_per_s": count / seconds,
                         "batched_phases_s": phases, "batched_median_psnr": _median_psnr(chunks, streams),
                         "batched_median_psnr_of_cpu_chunks": _median_psnr(cpu_chunks, streams[:len(cpu_chunks)])})
            _log(log, f"batch {batch}", count, seconds, phases)
        torch.set_num_threads(1)
        single_s, single_streams, single_phases = _encode(INRCodec(**options, device="cpu"), cpu_chunks, 1)
        _log(log, "CPU, one at a time, 1 thread", len(cpu_chunks), single_s, single_phases)
    finally:
        torch.set_num_threads(previous)
    for row in runs:
        row["speedup"] = row["batched_chunks_per_s"] / (len(cpu_chunks) / single_s)
    return {
        "data": str(data), "bpppb": bpppb, "chunk": [int(cube.shape[0]), size, size], "count": count,
        "effort": effort, "steps": steps,
        "device": str(batched.device or ("cuda" if torch.cuda.is_available() else "cpu")),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "batched": runs,
        "cpu_count": len(cpu_chunks), "cpu_one_at_a_time_s": single_s, "cpu_chunks_per_s": len(cpu_chunks) / single_s,
        "cpu_phases_s": single_phases, "cpu_median_psnr": _median_psnr(cpu_chunks, single_streams),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="xr-inr bench-batch", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a cube file (.npz, .mat, ENVI, GeoTIFF)")
    parser.add_argument("--bpppb", type=float, default=0.1)
    parser.add_argument("--size", type=int, default=50, help="chunk side in pixels (default 50)")
    parser.add_argument("--count", type=int, default=16, help="chunks (default 16)")
    parser.add_argument("--batch", default="16", help="chunks fitted together, or several sizes: 16,64 (default 16)")
    parser.add_argument("--cpu-count", type=int, help="chunks encoded one at a time on the CPU (default: all)")
    parser.add_argument("--device", help="torch device of the batched fits (default: CUDA when present, else CPU)")
    parser.add_argument("--effort", default="default", choices=("fast", "default", "best"))
    parser.add_argument("--steps", type=int, help="fitting steps instead of the effort's")
    parser.add_argument("--out", type=Path, help="also write the result here (JSON)")
    args = parser.parse_args(argv)
    batches = tuple(int(b) for b in args.batch.split(","))
    result = run(args.data, args.bpppb, args.size, args.count, batches, args.device, args.effort, args.steps,
                 args.cpu_count, log=print)
    n_cpu = result["cpu_count"]
    print("| device | chunks | batch | chunks/s | speedup | median PSNR dB (the CPU's chunks) | seconds per chunk: "
          "set-up, training, packing, rest |")
    print("|---|---|---|---|---|---|---|")
    rows = [(result["gpu"] or result["device"], row["batch"], row["batched_chunks_per_s"], row["speedup"],
             row["batched_median_psnr_of_cpu_chunks"], row["batched_phases_s"], row["batched_s"], result["count"])
            for row in result["batched"]]
    rows.append(("CPU, one at a time, 1 thread", 1, result["cpu_chunks_per_s"], 1.0, result["cpu_median_psnr"],
                 result["cpu_phases_s"], result["cpu_one_at_a_time_s"], n_cpu))
    for where, batch, rate, speedup, quality, phases, seconds, n in rows:
        split = [phases.get(name, 0.0) / n for name in ("setup", "training", "packing")]
        split.append(seconds / n - sum(split))
        print(f"| {where} | {n} x {result['chunk']} | {batch} | {rate:.3f} | {speedup:.2f}x | {quality:.2f} | "
              + ", ".join(f"{value:.3f}" for value in split) + " |")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return result
