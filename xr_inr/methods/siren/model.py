"""The SIREN network: its shape, its parameter layout and its evaluation in numpy.

This module is what a reader needs to decode a stream, so it must not import
torch. The torch twin used for fitting lives in
:mod:`xr_inr.methods.siren.fitting` and follows the same layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...core.products import matmul

W0 = 30.0
"""Frequency factor of the sine activations (Sitzmann et al. 2020; the paper's w0)."""


@dataclass(frozen=True)
class SirenSpec:
    """A SIREN mapping (y, x) in [-1, 1]^2 to ``bands`` values.

    ``depth`` sine layers of ``width`` units, then a linear layer to ``bands``.
    """

    depth: int
    width: int
    bands: int
    w0: float = W0

    def __post_init__(self):
        if self.depth < 1 or self.width < 1 or self.bands < 1:
            raise ValueError(f"invalid SIREN shape: {self}")

    def layer_shapes(self) -> list[tuple[int, int]]:
        """(out_features, in_features) of every linear layer, input to output."""
        shapes = [(self.width, 2)]
        shapes += [(self.width, self.width)] * (self.depth - 1)
        shapes.append((self.bands, self.width))
        return shapes

    @property
    def n_params(self) -> int:
        """Weights and biases together."""
        return sum(o * i + o for o, i in self.layer_shapes())


def largest_width(depth: int, bands: int, max_params: int) -> int:
    """The widest SIREN of ``depth`` layers with at most ``max_params`` parameters (0 if none)."""
    lo, hi = 0, max(max_params, 0)  # n_params grows with width: bisect
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if SirenSpec(depth, mid, bands).n_params <= max_params:
            lo = mid
        else:
            hi = mid - 1
    return lo


def flatten_params(spec: SirenSpec, layers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Concatenate (weight, bias) pairs in storage order: W0, b0, W1, b1, ..."""
    parts = []
    for (weight, bias), shape in zip(layers, spec.layer_shapes(), strict=True):
        if weight.shape != shape or bias.shape != (shape[0],):
            raise ValueError(f"layer shape {weight.shape} does not match {shape}")
        parts += [weight.ravel(), bias.ravel()]
    return np.concatenate(parts)


def unflatten_params(spec: SirenSpec, flat: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inverse of :func:`flatten_params`."""
    if flat.size != spec.n_params:
        raise ValueError(f"expected {spec.n_params} parameters, got {flat.size}")
    layers, pos = [], 0
    for out_f, in_f in spec.layer_shapes():
        weight = flat[pos : pos + out_f * in_f].reshape(out_f, in_f)
        pos += out_f * in_f
        bias = flat[pos : pos + out_f]
        pos += out_f
        layers.append((weight, bias))
    return layers


def axis_coords(n: int) -> np.ndarray:
    """Coordinates of the ``n`` pixel centres along one axis: -1 ... 1 (0 when n == 1)."""
    if n == 1:
        return np.zeros(1, dtype=np.float32)
    return np.linspace(-1.0, 1.0, n, dtype=np.float32)


def pixel_coords(positions: np.ndarray, n: int) -> np.ndarray:
    """Pixel positions 0 ... n - 1 (fractional too) to network coordinates -1 ... 1 (as :func:`axis_coords`)."""
    if n == 1:
        return np.zeros(len(positions), dtype=np.float32)
    if len(positions) == n and np.array_equal(positions, np.arange(n)):
        return axis_coords(n)
    return (positions * (2.0 / (n - 1)) - 1.0).astype(np.float32)


def coordinate_mesh(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """(len(ys) * len(xs), 2) array of (y, x) pairs, row-major."""
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([yy.ravel(), xx.ravel()], axis=1).astype(np.float32)


def evaluate(
    spec: SirenSpec,
    layers: list[tuple[np.ndarray, np.ndarray]],
    coords: np.ndarray,
    rows_per_pass: int = 65536,
) -> np.ndarray:
    """Run the network on (N, 2) coordinates; returns (N, bands) float32.

    A pass holds at most 2**24 hidden values (``rows_per_pass`` fewer rows for wide networks)."""
    rows_per_pass = max(1, min(rows_per_pass, 2**24 // spec.width))
    layers32 = [(w.astype(np.float32), b.astype(np.float32)) for w, b in layers]
    out = np.empty((coords.shape[0], spec.bands), dtype=np.float32)
    for start in range(0, coords.shape[0], rows_per_pass):
        h = coords[start : start + rows_per_pass].astype(np.float32)
        for weight, bias in layers32[:-1]:
            h = np.sin(spec.w0 * (matmul(h, weight.T) + bias))
        weight, bias = layers32[-1]
        out[start : start + rows_per_pass] = matmul(h, weight.T) + bias
    return out
