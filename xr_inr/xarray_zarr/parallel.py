"""Fitting many chunks at once with Dask: one task per chunk (on a GPU, per group of chunks
fitted together as one batch), and a progress bar.

The scheduler, unless one is given: a ``dask.distributed`` client the user
has open (used as is), else the scheduler set in ``dask.config``, else the
threaded scheduler. Each task limits torch, and numpy's BLAS, to ``torch_threads``
threads (one by default: chunks, not matrix products, are what runs in parallel).
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Sequence

import dask
import numpy as np
from dask.base import tokenize
from dask.callbacks import Callback

from ..core.codec import INRCodec
from ..core.encode import collected_warnings, encode_blocks, limit_blas
from ..core.quality import encode_to_psnr

TASK_PREFIX = "xr-inr-fit-"


GPU_BATCH = 16
"""Chunks per fit task when the fits run on CUDA, fitted together as one batch. On an H200, 16 chunks of
100 x 100 x 198 took about 0.5 GiB and 64 fitted only 8 % more chunks per second (the packing on the CPU
bounds it; docs/benchmarks.md, "Batched fits on a GPU"). A batch too large for the device is halved
(:func:`xr_inr.methods.grid.fitting.fit_and_pack`)."""


def batch_size(config: dict, fit_batch: int | None) -> int:
    """Chunks per fit task: ``fit_batch`` when given, else :data:`GPU_BATCH` when the fits at a fixed rate
    run on CUDA (``device`` "cuda...", or None with CUDA present here), else 1."""
    if fit_batch is not None:
        if int(fit_batch) != fit_batch or fit_batch < 1:
            raise ValueError(f"fit_batch must be a positive integer, got {fit_batch!r}")
        return int(fit_batch)
    if config.get("psnr") is not None or config.get("method") != "grid":
        return 1
    device = config.get("device")
    if device is None:
        import torch

        return GPU_BATCH if torch.cuda.is_available() else 1
    return GPU_BATCH if str(device).startswith("cuda") else 1


MMAP_THRESHOLD = 32 << 20
"""Buffers up to this size come from malloc's heap, not fresh mappings, in a process that fits
(glibc's ``M_MMAP_THRESHOLD``; 32 MiB, the largest every 64-bit glibc takes): a training step's
buffers (a 100 x 100 x 198 block's values are 7.9 MB) are then reused, not mapped, page-faulted and
unmapped at every step."""
TRIM_THRESHOLD = 256 << 20
"""Free memory above this is given back to the system (glibc's ``M_TRIM_THRESHOLD``)."""
_MALLOC_SET: list[bool] = []


def keep_fit_buffers() -> bool:
    """Set :data:`MMAP_THRESHOLD` and :data:`TRIM_THRESHOLD` in this process, once (glibc only; elsewhere
    nothing). With glibc's own adaptive thresholds, four 64 x 64 fits in two threads of one process took
    1.4-3.7x the page faults of the same fits in one thread; with ``MALLOC_TRIM_THRESHOLD_``, which
    dask.distributed sets in its workers and which stops the adapting, a fit spent most of its time in
    page faults (docs/benchmarks.md, "Scaling over workers and memory")."""
    if not _MALLOC_SET:
        try:
            mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the process's C library
        except (OSError, TypeError):  # Windows has no such handle
            mallopt = None
        # the mmap threshold first: setting one threshold alone stops glibc adapting the other
        done = mallopt is not None and mallopt(-3, MMAP_THRESHOLD) == 1 and mallopt(-1, TRIM_THRESHOLD) == 1
        _MALLOC_SET.append(bool(done))
    return _MALLOC_SET[0]


def fit_task(blocks, padded_shape, fill_value, nodata: bool, config: dict,
             torch_threads: int | None) -> list[tuple[bytes, dict | None, list]]:
    """Encode chunks (their valid regions ``blocks``) to streams, fitted together
    (:func:`xr_inr.core.encode.encode_blocks`); runs inside a Dask task.

    Returns one (stream, quality, warnings) per chunk: quality is None at a fixed rate, and with a
    PSNR target what the chunk achieved (:meth:`xr_inr.core.quality.QualityResult.record`: its PSNR,
    the encodes made; each chunk searched on its own); warnings are the encoder's (category,
    message) pairs, for the client to issue (:func:`xr_inr.core.encode.collected_warnings`).
    """
    keep_fit_buffers()
    if torch_threads:
        import torch

        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)
        limit_blas(torch_threads)  # for worker processes; in this one :func:`run` set it from the main thread
    codec = INRCodec(**config)
    blocks = [np.asarray(block) for block in blocks]
    padded = tuple(int(n) for n in padded_shape)
    options = [{} if padded == block.shape and not nodata else
               dict(padded_shape=padded, fill_value=fill_value, mask_fill=nodata) for block in blocks]
    if codec.psnr is None:
        return [(stream, None, caught) for stream, caught in encode_blocks(codec, blocks, options)]
    results = []
    for block, where in zip(blocks, options, strict=True):
        with collected_warnings() as caught:
            result = encode_to_psnr(codec, block, **where)
        results.append((result.stream, result.record(), caught))
    return results


def fit_delayed(data, chunk_shape: tuple[int, ...], fill_value: float, nodata: bool, config: dict,
                torch_threads: int | None, groups: list[list[tuple[int, ...]]]) -> list:
    """One delayed fit per group of chunk indices of ``data`` (a dask array chunked on the regular grid
    ``chunk_shape``): the chunks of a group are fitted together."""
    token = tokenize(data.name, chunk_shape, fill_value, nodata, config)
    blocks = data.to_delayed()
    tasks = []
    for group in groups:
        name = ".".join(map(str, group[0])) + (f"+{len(group) - 1}" if len(group) > 1 else "")
        tasks.append(dask.delayed(fit_task, pure=True)(
            [blocks[index] for index in group], chunk_shape, fill_value, nodata, config, torch_threads,
            dask_key_name=f"{TASK_PREFIX}{token}-{name}",
        ))
    return tasks


def default_client():
    """The ``dask.distributed`` client the user has open, else None (distributed not imported: None)."""
    if "distributed" not in sys.modules:
        return None
    from distributed import default_client as current

    try:
        return current()
    except ValueError:
        return None


def client_of(scheduler):
    """The ``dask.distributed`` client that ``scheduler`` (as given to :func:`run`) means, else None."""
    if _is_client(scheduler):
        return scheduler
    return default_client() if scheduler is None else None


def local_scheduler(scheduler):
    """The local scheduler that ``scheduler`` means when no client does: as given, else dask.config's,
    else threads."""
    return scheduler or dask.config.get("scheduler", None) or "threads"


def compute(tasks: Sequence, *, scheduler=None) -> list:
    """Compute small results (digests) on the scheduler :func:`run` would use, in order."""
    client = client_of(scheduler)
    if client is not None:
        return client.gather(client.compute(list(tasks)))
    return list(dask.compute(*tasks, scheduler=local_scheduler(scheduler)))


def run(tasks: Sequence, total: int, *, scheduler=None, progress: bool = True, desc: str = "xr-inr fit",
        on_result=None, blas_threads: int | None = None) -> list:
    """Compute delayed fits of ``total`` chunks, in order, showing per-chunk progress unless ``progress``
    is False.

    on_result : called as ``on_result(position, results)`` in this process as each fit
        task finishes (``results``: what :func:`fit_task` returns, one per chunk; the writer
        stores the chunks then, so an interrupted run keeps them).
    blas_threads : numpy's BLAS threads in this process while the fits run (:func:`~xr_inr.core.encode.limit_blas`,
        set here in the calling thread, before the tasks start; None: left as they are); the previous counts
        come back after.
    """
    tasks = list(tasks)
    bar = _bar(total, desc, progress)
    torch_threads, blas = _torch_threads(), limit_blas(blas_threads)
    position = {task.key: i for i, task in enumerate(tasks)}

    def finished(i, result):
        bar.update(len(result))
        if on_result is not None:
            on_result(i, result)

    try:
        client = client_of(scheduler)
        if client is not None:
            from distributed import as_completed

            # only the streams (bytes) come back to this process, each once, as its fit finishes;
            # the chunks are read by the tasks on the workers. loop=: as_completed would look for
            # the default client, and a client passed as scheduler need not be it
            futures = client.compute(tasks)
            at = {future: i for i, future in enumerate(futures)}
            results = [None] * len(futures)
            for future, result in as_completed(futures, with_results=True, loop=client.loop):
                results[at[future]] = result
                finished(at[future], result)
            return results
        with _ProgressCallback(lambda key, result: finished(position[key], result)):
            return list(dask.compute(*tasks, scheduler=local_scheduler(scheduler)))
    finally:
        bar.close()
        _restore_torch_threads(torch_threads)
        if blas is not None:
            blas.restore_original_limits()


def _is_client(obj) -> bool:
    return obj is not None and "distributed" in sys.modules and isinstance(obj, sys.modules["distributed"].Client)


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def _restore_torch_threads(previous: int | None) -> None:
    """Tasks set torch's thread count for the whole process: give the user's back."""
    torch = sys.modules.get("torch")
    if torch is not None and previous is not None and torch.get_num_threads() != previous:
        torch.set_num_threads(previous)


class _ProgressCallback(Callback):
    """Calls ``finished(key, result)`` each time a fit task of the local scheduler finishes."""

    def __init__(self, finished):
        super().__init__()
        self._finished = finished
        self._lock = threading.Lock()

    def _posttask(self, key, result, dsk, state, worker_id):
        if isinstance(key, str) and key.startswith(TASK_PREFIX):
            with self._lock:
                self._finished(key, result)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, desc: str, progress: bool):
    """A tqdm bar (tqdm.auto: terminal or notebook widget), or nothing when quiet or tqdm is absent."""
    if not progress:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="chunk", dynamic_ncols=True)
