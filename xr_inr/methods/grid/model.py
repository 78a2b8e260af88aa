"""The latent-grid neural field (method "grid"): its layout and its numpy decoding.

A block of ``bands`` x h x w values, normalised to [0, 1], is stored as

* ``components`` integer coefficient images at full resolution: a pixel's
  spectrum is ``mean + step * coefficients @ basis``, the basis
  (``components`` x bands) and mean initialised by PCA and learned jointly;
* more integer latent grids, level l holding ``channels[l]`` grids of
  ceil(h / 2**l) x ceil(w / 2**l) values (Cool-chic / C3 style);
* a synthesis MLP (when ``hidden`` > 0) that reads the coefficient images and
  the other latents, upsampled to the pixel grid, and adds a correction to
  the coefficients (its output layer starts at zero);
* an autoregressive model (ARM): an MLP that reads the 12 already-decoded
  neighbours of a latent (:data:`CONTEXT`) and gives the location and scale
  of the discretised Laplace distribution its value is entropy coded with.

Decoding reverses the entropy coding of the latents wavefront by wavefront
(the ARM needs each latent's decoded neighbours), then evaluates the spectra at the requested pixel positions: any grid, as
the latents are interpolated linearly. Only numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONTEXT = ((-2, -2), (-2, -1), (-2, 0), (-2, 1), (-2, 2),
           (-1, -2), (-1, -1), (-1, 0), (-1, 1), (-1, 2),
           (0, -2), (0, -1))
"""(dy, dx) of the causal neighbours the ARM reads (zero outside the grid)."""

WAVEFRONT_SLOPE = 3
"""Latents with equal 3 * row + column are decoded together: none of them is in
another's context, and every context position lies on an earlier wavefront."""


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
    an MLP that reads the context minus that prediction (log-compressed, see
    :func:`arm_parameters`) and gives (location correction, log scale)."""
        n = len(CONTEXT)
        return [(1, n), (self.arm_hidden, n), (self.arm_hidden, self.arm_hidden), (2, self.arm_hidden)]


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation (torch's ``approximate="tanh"``)."""
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x**3)))


def mlp(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    """GELU between linear layers, none after the last."""
    for weight, bias in layers[:-1]:
        x = gelu(x @ weight.T + bias)
    weight, bias = layers[-1]
    return x @ weight.T + bias


def upsample_matrix(positions: np.ndarray, n_low: int, factor: int) -> np.ndarray:
    """(len(positions), n_low) linear interpolation from a grid 1/``factor`` as fine.

    Pixel position p (0 ... n - 1 on the full grid) sits at (p + 0.5) / factor - 0.5
    on the coarse one (pixel centres aligned), clamped to its ends.
    """
    u = np.clip((np.asarray(positions, dtype=np.float64) + 0.5) / factor - 0.5, 0, n_low - 1)
    matrix = np.zeros((u.size, n_low))
    rows = np.arange(u.size)
    if n_low == 1:
        matrix[:, 0] = 1.0
        return matrix
    lower = np.minimum(np.floor(u).astype(np.intp), n_low - 2)
    frac = u - lower
    matrix[rows, lower] = 1.0 - frac
    matrix[rows, lower + 1] += frac
    return matrix


def upsampled_features(spec: GridSpec, latents: list[np.ndarray], ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """(len(ys) * len(xs), all channels) latents interpolated at the pixel positions, row-major."""
    features = []
    for level, grid in enumerate(latents):
        if grid.shape[0] == 0:
            continue
        gh, gw = spec.level_shape(level)
        up_y = upsample_matrix(ys, gh, 2**level)
        up_x = upsample_matrix(xs, gw, 2**level)
        up = np.einsum("yi,cij,xj->yxc", up_y, grid.astype(np.float64), up_x, optimize=True)
        features.append(up.reshape(len(ys) * len(xs), -1))
    return np.concatenate(features, axis=1)


def synthesise(spec: GridSpec, latents, step, synthesis, basis, mean, ys, xs) -> np.ndarray:
    """Normalised values (bands, len(ys), len(xs)) at the pixel positions ``ys`` x ``xs``."""
    features = upsampled_features(spec, latents, ys, xs)
    features[:, : spec.components] *= step
    coefficients = features[:, : spec.components]
    if spec.hidden:
        coefficients = coefficients + mlp(synthesis, features)
    values = coefficients @ basis + mean
    return values.T.reshape(spec.bands, len(ys), len(xs))


def wavefronts(height: int, width: int):
    """(rows, cols) index arrays of each wavefront of a height x width grid, in decoding order."""
    for t in range(WAVEFRONT_SLOPE * (height - 1) + width):
        rows = np.arange(max(0, -(-(t - width + 1) // WAVEFRONT_SLOPE)), min(height - 1, t // WAVEFRONT_SLOPE) + 1)
        cols = t - WAVEFRONT_SLOPE * rows
        yield rows, cols


def context_at(padded: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(channels * len(rows), 12) contexts from a grid padded by 2 on top, left and right."""
    ctx = np.stack([padded[:, rows + 2 + dy, cols + 2 + dx] for dy, dx in CONTEXT], axis=-1)
    return ctx.reshape(-1, len(CONTEXT))


def compress(x: np.ndarray) -> np.ndarray:
    """sign(x) * log2(1 + |x|): the ARM's view of context deviations of any size."""
    return np.sign(x) * np.log2(1.0 + np.abs(x))


def arm_parameters(arm, context: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Laplace location and scale for each context row (float64)."""
    context = context.astype(np.float64)
    (weight, bias), *layers = arm
    prediction = context @ weight[0] + bias[0]
    out = mlp(layers, compress(context - prediction[:, None]))
    return prediction + out[:, 0], np.exp(np.clip(out[:, 1], -10.0, 10.0))


def code_latents(spec: GridSpec, arm, latents: list[np.ndarray], coder) -> None:
    """Push every latent to an entropy encoder, in decoding order (see :func:`decode_latents`).

    What is coded is the latent minus its rounded predicted location, under a
    Laplace centred on the prediction's fractional part: small alphabets.
    """
    for level, channels in enumerate(spec.level_channels()):
        if channels == 0:
            continue
        gh, gw = spec.level_shape(level)
        padded = np.zeros((channels, gh + 2, gw + 4))
        padded[:, 2:, 2:-2] = latents[level]
        for rows, cols in wavefronts(gh, gw):
            mu, scale = arm_parameters(arm, context_at(padded, rows, cols))
            centre = np.round(mu)
            coder.push(latents[level][:, rows, cols].reshape(-1) - centre.astype(np.int64), mu - centre, scale)


def decode_latents(spec: GridSpec, arm, decoder) -> list[np.ndarray]:
    """The integer latent grids, read from an entropy decoder wavefront by wavefront."""
    latents = []
    for level, channels in enumerate(spec.level_channels()):
        gh, gw = spec.level_shape(level)
        padded = np.zeros((channels, gh + 2, gw + 4))
        if channels:
            for rows, cols in wavefronts(gh, gw):
                mu, scale = arm_parameters(arm, context_at(padded, rows, cols))
                centre = np.round(mu)
                symbols = decoder.pop(mu - centre, scale) + centre
                padded[:, rows + 2, cols + 2] = symbols.reshape(channels, len(rows))
        latents.append(padded[:, 2:, 2:-2])
    return latents
