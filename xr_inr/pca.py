"""Principal component analysis over the bands: shared by the grid method and the PCA baselines."""

from __future__ import annotations

import numpy as np


def pca(values: np.ndarray, components: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean spectrum (bands,) and the top ``components`` principal directions (components, bands)
    of ``values`` (pixels, bands), by decreasing variance; rows past the rank are zero."""
    mean = values.mean(axis=0)
    _, _, vt = np.linalg.svd(values - mean, full_matrices=False)
    basis = np.zeros((components, values.shape[1]))
    basis[: min(components, vt.shape[0])] = vt[:components]
    return mean, basis
