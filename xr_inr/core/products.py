"""Matrix products that stay on the calling thread, whatever the BLAS thread settings.

numpy's wheels use OpenBLAS, which runs a product on several threads once
m * n * k exceeds 2**18. Decoders run inside Dask's threads (a chunk per
thread), and BLAS threads on top of those oversubscribe the cores: measured
on the 2-core machine, 16 grid decodes in 2 threads took 2.4 s of CPU with
OpenBLAS's default threads against 1.4 s with ``OPENBLAS_NUM_THREADS=1``.
:func:`matmul` splits a larger product into blocks under that size, so a decode is
single-threaded without the user setting anything. The blocks depend on the
shapes only, so the result does not depend on thread settings; its last bits
can depend on the blocking (measured: a 198 x 20 by 20 x 10,000 product in
row blocks and in column blocks differs in the last bit), so the blocking is
part of the decoder and stays as it is.
"""

from __future__ import annotations

import numpy as np

SINGLE_THREAD_SIZE = 2**18
"""OpenBLAS runs a product of m * n * k at most this on the calling thread
(``SMP_THRESHOLD_MIN * GEMM_MULTITHREAD_THRESHOLD`` in its ``interface/gemm.c``)."""


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for 2-D arrays, in row (or column) blocks of at most :data:`SINGLE_THREAD_SIZE` multiply-adds."""
    m, k = a.shape
    n = b.shape[1]
    if m * k * n <= SINGLE_THREAD_SIZE:
        return a @ b
    out = np.empty((m, n), np.result_type(a, b))
    if m >= n:
        step = max(1, SINGLE_THREAD_SIZE // (k * n))
        for start in range(0, m, step):
            np.matmul(a[start : start + step], b, out=out[start : start + step])
    else:
        step = max(1, SINGLE_THREAD_SIZE // (m * k))
        for start in range(0, n, step):  # into a contiguous block, then copied: 2-3x faster than out=
            out[:, start : start + step] = a @ b[:, start : start + step]
    return out


def gram(a: np.ndarray) -> np.ndarray:
    """``a.T @ a`` for a 2-D array, summed over blocks of rows of at most :data:`SINGLE_THREAD_SIZE`
    multiply-adds each (in order: the sum does not depend on thread settings)."""
    n = a.shape[1]
    step = max(1, SINGLE_THREAD_SIZE // (n * n))
    out = np.zeros((n, n), np.result_type(a))
    for start in range(0, a.shape[0], step):
        block = a[start : start + step]
        out += block.T @ block
    return out
