"""The latent-grid neural field (method "grid"): its layout and its numpy decoding.

A block of ``bands`` x h x w values, normalised to [0, 1], is stored as

* ``components`` integer coefficient images at full resolution: a pixel's
  spectrum is ``mean + step * coefficients @ basis``, the basis
  (``components`` x bands) and mean initialised by PCA and learned jointly;
* more integer latent grids, level l holding ``channels[l]`` grids of
  ceil(h / 2**l) x ceil(w / 2**l) values (Cool-chic / C3 style);
* a 3 x 3 filter per coefficient image (when ``filtered``), added to it on the
  pixel grid: the coarsely quantised images are smoothed as the fit learned
  (format version 3; docs/method.md, "A filter on the coefficient images");
* a synthesis MLP (when ``hidden`` > 0) that reads the coefficient images and
  the other latents, upsampled to the pixel grid, and adds a correction to
  the coefficients (its output layer starts at zero);
* an autoregressive model (ARM): an integer MLP that reads 12 already-decoded
  neighbours of a latent and gives the location and scale of the discretised
  Laplace its value is entropy coded with (:mod:`xr_inr.methods.grid.arm`:
  the decoding phases and the integer arithmetic).

Decoding reverses the entropy coding of the latents phase by phase, then
evaluates the spectra at the requested pixel positions: any grid, as the
latents are interpolated linearly. Only numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...core.products import matmul

try:
    from . import _synthesis as _compiled
except ImportError:  # built without a C compiler (or for x87): numpy, the same bits
    _compiled = None

CONTEXT_SIZE = 12
"""Neighbours the ARM reads (see :func:`xr_inr.methods.grid.arm.phases`)."""


@dataclass(frozen=True)
class GridSpec:
    """Shape of one block's latent-grid model."""

    bands: int
    height: int
    width: int
    components: int
    """Spectral basis vectors: coefficient images (full resolution, level 0)."""
    channels: tuple[int, ...]
    """Other latent channels per level, read by the synthesis MLP only; level l
    has 1 / 2**l of the resolution."""
    hidden: int
    """Width of the synthesis MLP's two hidden layers (0: no MLP)."""
    arm_hidden: int
    """Width of the ARM's two hidden layers."""
    filtered: bool = False
    """Whether each coefficient image has a 3 x 3 filter (:func:`filter_images`; streams of format
    version 2 have none)."""
    pulled: bool = False
    """Whether each coefficient image's latents are pulled towards the entropy coder's locations
    (:func:`pull_images`; format version 4 on)."""

    def __post_init__(self):
        if min(self.bands, self.height, self.width, self.components, self.arm_hidden) < 1 or self.hidden < 0:
            raise ValueError(f"invalid grid model shape: {self}")
        if not self.channels or min(self.channels) < 0 or len(self.channels) > 12:
            raise ValueError(f"invalid latent channels: {self.channels}")
        if self.hidden == 0 and sum(self.channels):
            raise ValueError("latent channels need a synthesis MLP (hidden > 0)")

    def level_shape(self, level: int) -> tuple[int, int]:
        factor = 2**level
        return (-(-self.height // factor), -(-self.width // factor))

    def level_channels(self) -> list[int]:
        """Latent grids per level, the coefficient images included in level 0."""
        return [c + (self.components if level == 0 else 0) for level, c in enumerate(self.channels)]

    def synthesis_shapes(self) -> list[tuple[int, int]]:
        """(out, in) of the synthesis MLP's linear layers (none when ``hidden`` is 0)."""
        if self.hidden == 0:
            return []
        n_in = self.components + sum(self.channels)
        return [(self.hidden, n_in), (self.hidden, self.hidden), (self.components, self.hidden)]

    def arm_shapes(self) -> list[tuple[int, int]]:
        """(out, in) of the ARM's layers: a linear predictor of the location, then
        an MLP that reads the context minus that prediction (log-compressed) and the
        phase's stride feature (see :func:`xr_inr.methods.grid.arm.arm_integers`) and
        gives (location correction, log2 scale)."""
        n = CONTEXT_SIZE
        return [(1, n), (self.arm_hidden, n + 1), (self.arm_hidden, self.arm_hidden), (2, self.arm_hidden)]


def filter_images(images: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """``images`` (k, h, w) plus each one's 3 x 3 correlation with its ``taps`` (k, 9, row-major over
    the offsets -1, 0, 1), the edges repeated: float64, the taps added one after another (in one pass
    without the GIL where the extension is built: the same bits)."""
    images = np.asarray(images, np.float64)
    height, width = images.shape[1:]
    if _compiled is not None and images.size and images.flags.c_contiguous \
            and taps.dtype == np.float64 and taps.shape == (images.shape[0], 9) and taps.flags.c_contiguous:
        out = np.empty_like(images)
        _compiled.filter_images(images, taps, out, height, width)
        return out
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)), mode="edge")
    out = images.copy()
    for tap in range(9):
        dy, dx = divmod(tap, 3)
        out += taps[:, tap, None, None] * padded[:, dy:dy + height, dx:dx + width]
    return out


def pull_images(images: np.ndarray, locations: np.ndarray, pull: np.ndarray) -> np.ndarray:
    """Integer coefficient images (k, h, w) pulled towards the ``locations`` (k, h, w) the entropy
    coder centred their Laplaces on: with d = location - latent, each latent plus
    ``pull[r, 0]`` clip(d, -1/2, 1/2) + ``pull[r, 1]`` clip(d, -2, 2) (float64; in one pass without the GIL
    where the extension is built: the same bits)."""
    images = np.ascontiguousarray(images, np.float64)
    if _compiled is not None and images.size and locations.shape == images.shape and pull.dtype == np.float64 \
            and pull.shape == (images.shape[0], 2) and pull.flags.c_contiguous:
        out = np.empty_like(images)
        _compiled.pull_images(images, np.ascontiguousarray(locations, np.float64), pull, out)
        return out
    d = locations - images
    return images + pull[:, 0, None, None] * np.clip(d, -0.5, 0.5) + pull[:, 1, None, None] * np.clip(d, -2.0, 2.0)


def pulled_latents(spec: GridSpec, latents: list[np.ndarray], locations: np.ndarray, pull: np.ndarray) -> list:
    """``latents`` (one grid per level) with level 0's coefficient images pulled (:func:`pull_images`)."""
    level0 = np.asarray(latents[0], np.float64)
    images = pull_images(level0[: spec.components], locations, pull)
    return [np.concatenate([images, level0[spec.components :]]), *latents[1:]]


def gelu(x: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """GELU (tanh approximation, torch's ``approximate="tanh"``) of ``x`` + ``bias`` (a row per
    point), in place: x + bias, then 0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))),
    the same operations in the same order (fused around numpy's tanh where the extension is built)."""
    t = np.empty_like(x)
    if _fusable(x, bias):
        _compiled.gelu_start(x, bias, t)
        np.tanh(t, out=t)
        _compiled.gelu_finish(x, t)
        return x
    x += bias
    np.multiply(0.044715, x, out=t)
    t *= x
    t *= x
    t += x
    t *= 0.7978845608028654
    np.tanh(t, out=t)
    t += 1.0
    x *= 0.5
    x *= t
    return x


def _fusable(x: np.ndarray, vector: np.ndarray, axis: int = 1) -> bool:
    """Whether the extension's fused passes take ``x`` (2-D float64 in C order) and ``vector`` (one
    float64 per column, or per row with ``axis`` 0)."""
    return (_compiled is not None and x.dtype == vector.dtype == np.float64 and x.ndim == 2 and x.flags.c_contiguous
            and vector.shape == (x.shape[axis],) and vector.flags.c_contiguous)


def _added_output(features: np.ndarray, x: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The coefficients (the first columns of ``features``) + (``x`` + ``bias``), into ``x``."""
    if _fusable(x, bias) and _fusable(features, features[0]) and features.shape[0] == x.shape[0] \
            and features.shape[1] >= x.shape[1]:
        _compiled.add_output(x, bias, features, features.shape[1])
        return x
    x += bias
    return np.add(features[:, : x.shape[1]], x, out=x)


def _spectra(values: np.ndarray, mean: np.ndarray, affine) -> np.ndarray:
    """(``values`` + ``mean``) * scale + offset, in place (bands, pixels); ``affine``: (scale,
    offset), or None for the mean alone."""
    if affine is not None and _fusable(values, mean, axis=0):
        _compiled.spectra(values, mean, *affine)
        return values
    values += mean[:, None]
    if affine is not None:
        values *= affine[0]
        values += affine[1]
    return values


def upsample_weights(positions: np.ndarray, n_low: int, factor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation from a grid 1/``factor`` as fine: (lower, upper, frac) per position, the
    value being ``(1 - frac) * grid[lower] + frac * grid[upper]``.

    Pixel position p (0 ... n - 1 on the full grid) sits at (p + 0.5) / factor - 0.5
    on the coarse one (pixel centres aligned), clamped to its ends.
    """
    u = np.clip((np.asarray(positions, dtype=np.float64) + 0.5) / factor - 0.5, 0, n_low - 1)
    lower = np.minimum(np.floor(u).astype(np.intp), max(n_low - 2, 0))
    return lower, np.minimum(lower + 1, n_low - 1), u - lower


def upsample_matrix(positions: np.ndarray, n_low: int, factor: int) -> np.ndarray:
    """(len(positions), n_low): :func:`upsample_weights` as a matrix (for fitting)."""
    lower, upper, frac = upsample_weights(positions, n_low, factor)
    matrix = np.zeros((lower.size, n_low))
    rows = np.arange(lower.size)
    matrix[rows, lower] = 1.0 - frac
    matrix[rows, upper] += frac
    return matrix


def _interpolate(grid: np.ndarray, positions: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """``grid`` interpolated along ``axis`` at the pixel positions (:func:`upsample_weights`)."""
    lower, upper, frac = upsample_weights(positions, grid.shape[axis], factor)
    if np.all((frac == 0) | (frac == 1)):  # on the grid's own points (level 0 at its pixels): a copy, same values
        return np.take(grid, np.where(frac == 1, upper, lower), axis)
    frac = np.expand_dims(frac, tuple(range(1, grid.ndim - axis)))
    return np.take(grid, lower, axis) * (1.0 - frac) + np.take(grid, upper, axis) * frac


def upsampled_features(spec: GridSpec, latents: list[np.ndarray], ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """(len(ys) * len(xs), all channels) latents interpolated at the pixel positions, row-major.

    Gathers two neighbours per axis (no dense interpolation matrix: memory stays that of the output); in one
    pass per level without the GIL where the extension is built (the same bits; finite positions)."""
    levels = [(grid, 2**level) for level, grid in enumerate(latents) if grid.shape[0]]
    if _compiled is not None and len(ys) and len(xs) and np.isfinite(ys).all() and np.isfinite(xs).all():
        return _compiled_features(levels, ys, xs)
    features = []
    for grid, factor in levels:
        up = _interpolate(_interpolate(np.asarray(grid, np.float64), ys, factor, 1), xs, factor, 2)
        features.append(up.transpose(1, 2, 0).reshape(len(ys) * len(xs), -1))
    return np.concatenate(features, axis=1)


def _compiled_features(levels: list[tuple[np.ndarray, int]], ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """:func:`upsampled_features` of the (grid, factor) ``levels`` by the extension: each axis's weights as
    :func:`_interpolate` takes them (finite positions: every neighbour within the grid)."""
    out = np.empty((len(ys) * len(xs), sum(grid.shape[0] for grid, _ in levels)))
    first = 0
    for grid, factor in levels:
        c, gh, gw = grid.shape
        axes = []
        for positions, n_low in ((ys, gh), (xs, gw)):
            lower, upper, frac = upsample_weights(positions, n_low, factor)
            axes += [lower.astype(np.int64), upper.astype(np.int64), frac, bool(np.all((frac == 0) | (frac == 1)))]
        _compiled.interpolate(np.ascontiguousarray(grid, np.float64), c, gh, gw, *axes,
                              np.empty((c, len(ys), gw)), out, out.shape[1], first)
        first += c
    return out


def synthesis_inputs(spec: GridSpec, latents, step, ys, xs, taps: np.ndarray | None = None) -> np.ndarray:
    """(len(ys) * len(xs), all channels): what the synthesis MLP reads at the pixel positions ``ys`` x ``xs``,
    the coefficient images (filtered by ``taps`` where ``spec.filtered``: :func:`filter_images`) times
    ``step`` first, then the other channels, all interpolated (:func:`upsampled_features`)."""
    if spec.filtered:  # on the whole pixel grid, before any interpolation
        level0 = np.asarray(latents[0], np.float64)
        level0 = np.concatenate([filter_images(level0[: spec.components], taps), level0[spec.components :]])
        latents = [level0, *latents[1:]]
    features = upsampled_features(spec, latents, ys, xs)
    features[:, : spec.components] *= step
    return features


def coefficients_at(spec: GridSpec, latents, step, synthesis, ys, xs, taps: np.ndarray | None = None) -> np.ndarray:
    """(len(ys) * len(xs), k): the coefficients at the pixel positions ``ys`` x ``xs``
    (:func:`synthesised` of :func:`synthesis_inputs`)."""
    return synthesised(spec, synthesis_inputs(spec, latents, step, ys, xs, taps), synthesis)


def synthesised(spec: GridSpec, features: np.ndarray, synthesis) -> np.ndarray:
    """(pixels, k): :func:`synthesis_inputs`' coefficient columns plus the synthesis MLP's output for them."""
    if not spec.hidden:
        return features[:, : spec.components]
    *hidden, (weight, bias) = synthesis  # GELU between linear layers, none after the last, whose output is added
    x = features
    for w, b in hidden:
        x = gelu(matmul(x, w.T), b)
    return _added_output(features, matmul(x, weight.T), bias)


def synthesise(spec: GridSpec, latents, step, synthesis, basis, mean, ys, xs, affine=None,
               taps: np.ndarray | None = None) -> np.ndarray:
    """Normalised values (bands, len(ys), len(xs)) at the pixel positions ``ys`` x ``xs``; with
    ``affine`` (scale, offset), those values times scale plus offset (:func:`coefficients_at` times the
    basis, plus the mean)."""
    coefficients = coefficients_at(spec, latents, step, synthesis, ys, xs, taps)
    values = matmul(basis.T, coefficients.T)  # (bands, pixels): C order, no transposed copy
    return _spectra(values, mean, affine).reshape(spec.bands, len(ys), len(xs))
