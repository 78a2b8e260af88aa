"""Fitting many chunks at once with Dask: one task per chunk, and a progress bar.

The scheduler, unless one is given: a ``dask.distributed`` client the user
has open (used as is), else the scheduler set in ``dask.config``, else the
threaded scheduler. Each task limits torch to ``torch_threads`` threads (one
by default: chunks, not matrix products, are what runs in parallel).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from typing import Any

import dask
import numpy as np
from dask.base import tokenize
from dask.callbacks import Callback

from ..core.codec import INRCodec
from ..core.encode import collected_warnings
from ..core.quality import encode_to_psnr

TASK_PREFIX = "xr-inr-fit-"


def fit_task(block, padded_shape, fill_value, nodata: bool, config: dict,
             torch_threads: int | None) -> tuple[bytes, dict | None, list]:
    """Encode one chunk (its valid region ``block``) to a stream; runs inside a Dask task.

    Returns (stream, quality, warnings): quality is None at a fixed rate, and with a PSNR target
    what the chunk achieved (:meth:`xr_inr.core.quality.QualityResult.record`: its PSNR, the
    encodes made); warnings are the encoder's (category, message) pairs, for the client to issue
    (:func:`xr_inr.core.encode.collected_warnings`).
    """
    with collected_warnings() as caught:
        stream, quality = _fit(block, padded_shape, fill_value, nodata, config, torch_threads)
    return stream, quality, caught


def _fit(block, padded_shape, fill_value, nodata: bool, config: dict, torch_threads: int | None):
    block = np.asarray(block)
    if torch_threads:
        import torch

        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)
    codec = INRCodec(**config)
    padded = tuple(int(n) for n in padded_shape)
    where = {} if padded == block.shape and not nodata else dict(padded_shape=padded, fill_value=fill_value,
                                                                  mask_fill=nodata)
    if codec.psnr is None:
        return codec.encode_block(block, **where), None
    result = encode_to_psnr(codec, block, **where)
    return result.stream, result.record()


def fit_delayed(data, chunk_shape: tuple[int, ...], fill_value: float, nodata: bool, config: dict,
                torch_threads: int | None) -> dict[tuple[int, ...], Any]:
    """One delayed fit per chunk of ``data`` (a dask array chunked on the regular grid ``chunk_shape``)."""
    token = tokenize(data.name, chunk_shape, fill_value, nodata, config)
    blocks = data.to_delayed()
    tasks = {}
    for index in np.ndindex(*blocks.shape):
        tasks[index] = dask.delayed(fit_task, pure=True)(
            blocks[index], chunk_shape, fill_value, nodata, config, torch_threads,
            dask_key_name=f"{TASK_PREFIX}{token}-{'.'.join(map(str, index))}",
        )
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


def run(tasks: Sequence, *, scheduler=None, progress: bool = True, desc: str = "xr-inr fit",
        on_result=None) -> list:
    """Compute delayed fits, in order, showing per-chunk progress unless ``progress`` is False.

    on_result : called as ``on_result(position, result)`` in this process as each fit
        finishes (``result``: what :func:`fit_task` returns; the writer stores each chunk then,
        so an interrupted run keeps them).
    """
    tasks = list(tasks)
    bar = _bar(len(tasks), desc, progress)
    torch_threads = _torch_threads()
    position = {task.key: i for i, task in enumerate(tasks)}

    def finished(i, result):
        bar.update(1)
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
