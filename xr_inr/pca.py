"""Principal component analysis over the bands: shared by the grid method and the PCA baselines."""

from __future__ import annotations

import numpy as np

from .core.products import gram


def pca(values: np.ndarray, components: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean spectrum (bands,) and the top ``components`` principal directions (components, bands)
    of ``values`` (pixels, bands), by decreasing variance; rows past min(pixels, bands) are zero.

    The directions are the eigenvectors of the bands' scatter matrix, summed on the calling thread
    (:func:`xr_inr.core.products.gram`): an SVD of the pixels runs on BLAS's threads, and beside a
    fit busy on the other core of this 2-core machine it took 2.5-6 s instead of 0.2 s for a
    100 x 100 x 198 block (the eigensolver, on a bands x bands matrix, still took 0.35 s there)."""
    mean = values.mean(axis=0)
    _, vectors = np.linalg.eigh(gram(values - mean))  # ascending eigenvalues
    rank = min(components, *values.shape)
    basis = np.zeros((components, values.shape[1]))
    basis[:rank] = vectors[:, ::-1][:, :rank].T
    return mean, basis
