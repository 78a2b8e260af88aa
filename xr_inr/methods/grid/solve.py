"""The parts of a grid model that its values depend on linearly, solved for the latents a stream codes.

Encoder side (numpy). Once a block's latents are integers and its ARM quantised, the decoded values
are linear in each coefficient image's pulls towards the coder's locations
(:func:`~xr_inr.methods.grid.model.pull_images`), in its filter taps, and in the basis and mean.
:func:`solved_linear_parts` solves them by least squares in that order, each with the others held
(and the synthesis MLP's output held as it is), with a ridge towards the trained values
(:data:`RIDGE`), and keeps each solution only where the MSE falls. Training leaves the taps of a
short fit far from their optimum, and never sees the pulls (docs/method.md, "The linear parts solved
for the coded latents").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .model import coefficients_at, filter_images, pull_images, pulled_latents

SOLVE_PIXELS = 16_384
"""The equations read every n-th pixel, n the least that leaves at most this many (a 128 x 128 block reads
them all): a 256 x 256 block at 0.1 bpppb packed 1.3 s faster and peaked 100 MiB lower than with every
pixel (the MSE that decides what is kept still reads every pixel)."""
RIDGE = 1e-4
"""Each solve is pulled towards the trained values (zero pulls) by this share of its normal equations'
mean diagonal: a small block's equations can be near singular, and their exact solution then huge and
fragile (filter taps in the hundreds on an 11 x 6 block)."""


class Projection:
    """A target's values (pixels, bands) centred on ``mean`` and projected on ``basis`` (k, bands), which
    give the MSE of any coefficients C (pixels, k) without forming C B: |X - m - C B|^2 =
    |X - m|^2 - <C, 2 (X - m) B^T - C B B^T>, k / bands of the work."""

    def __init__(self, values: np.ndarray, mean: np.ndarray, basis: np.ndarray):
        centred = values - mean
        self.projected, self.gram, self.total = centred @ basis.T, basis @ basis.T, float(np.sum(centred**2))
        self.size = values.size

    def mse(self, coefficients: np.ndarray) -> float:
        return (self.total - float(np.sum(coefficients * (2 * self.projected - coefficients @ self.gram)))) / self.size


@dataclass
class LinearParts:
    """A block's pulls (k, 2) or None, filter taps (k, 9) or None, basis (k, bands), mean (bands), and the
    MSE they give (with, while solving, the coefficients (pixels, k) and the target's :class:`Projection`
    on that mean and basis)."""

    pull: np.ndarray | None
    taps: np.ndarray | None
    basis: np.ndarray
    mean: np.ndarray
    mse: float
    coefficients: np.ndarray | None = field(default=None, repr=False)
    projection: Projection | None = field(default=None, repr=False)


def solved_linear_parts(fit, target: np.ndarray, locations: np.ndarray | None,
                        which: tuple[str, ...] = ("pull", "taps", "basis")) -> LinearParts:
    """``fit``'s linear parts solved for its integer latents and ``target`` (bands, h, w, no element
    masked); ``locations``: the coefficient images' coder locations (k, h, w) where ``fit.spec.pulled``;
    ``which``: those solved, of "pull", "taps" and "basis" (with the mean), the others as trained."""
    spec = fit.spec
    k, height, width = spec.components, spec.height, spec.width
    ys, xs = np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64)
    values = target.reshape(spec.bands, -1).T  # (pixels, bands)
    images = np.asarray(fit.latents[0][:k], np.float64)
    rows = slice(None, None, -(-height * width // SOLVE_PIXELS))  # the pixels the equations read

    def coefficients(parts: LinearParts) -> np.ndarray:
        latents = pulled_latents(spec, fit.latents, locations, parts.pull) if spec.pulled else fit.latents
        return coefficients_at(spec, latents, fit.step, fit.synthesis, ys, xs, parts.taps)

    def with_mse(parts: LinearParts, projection: Projection) -> LinearParts:
        parts.coefficients, parts.projection = coefficients(parts), projection
        parts.mse = projection.mse(parts.coefficients)
        return parts

    def tap_columns(parts: LinearParts) -> np.ndarray:  # (rows, k, 9): each tap's neighbour, times the step
        pulled = pull_images(images, locations, parts.pull) if spec.pulled else images
        padded = np.pad(pulled, ((0, 0), (1, 1), (1, 1)), mode="edge")
        return fit.step * np.stack([padded[:, i : i + height, j : j + width].reshape(k, -1)[:, rows]
                                    for i in range(3) for j in range(3)], axis=2).transpose(1, 0, 2)

    def pull_columns(parts: LinearParts) -> np.ndarray:  # (rows, k, 2): each pull's term, filtered
        d = locations - images
        terms = [np.clip(d, -0.5, 0.5), np.clip(d, -2.0, 2.0)]
        if spec.filtered:
            terms = [filter_images(term, parts.taps) for term in terms]
        return fit.step * np.stack([term.reshape(k, -1)[:, rows] for term in terms], axis=2).transpose(1, 0, 2)

    def solve_images(parts: LinearParts, name: str, columns) -> LinearParts:
        design = columns(parts)  # the images' values change by design[:, r] @ parameter[r]
        pixels, _, c = design.shape
        current = getattr(parts, name)
        projection, gram = parts.projection, parts.projection.gram
        # the residual without this solve's term, projected on the basis: (X - m) B^T - (C - term) B B^T
        without = parts.coefficients[rows] - np.einsum("prc,rc->pr", design, current)
        residual = projection.projected[rows] - without @ gram
        flat = design.reshape(pixels, k * c)
        normal = (flat.T @ flat).reshape(k, c, k, c) * gram[:, None, :, None]
        rhs = np.einsum("prc,pr->rc", design, residual)
        solution = _ridge_solution(normal.reshape(k * c, k * c), rhs.reshape(-1), current.reshape(-1))
        return with_mse(LinearParts(**{**parts.__dict__, name: solution.reshape(k, c)}), projection)

    def solve_basis(parts: LinearParts) -> LinearParts:
        design = np.concatenate([parts.coefficients[rows], np.ones((len(range(height * width)[rows]), 1))], axis=1)
        current = np.concatenate([parts.basis, parts.mean[None]])
        solution = _ridge_solution(design.T @ design, design.T @ values[rows], current)
        basis, mean = solution[:-1], solution[-1]
        return with_mse(LinearParts(parts.pull, parts.taps, basis, mean, 0.0), Projection(values, mean, basis))

    basis, mean = np.array(fit.basis, np.float64), np.array(fit.mean, np.float64)
    parts = with_mse(LinearParts(np.zeros((k, 2)) if spec.pulled else None,
                                 None if fit.taps is None else np.array(fit.taps, np.float64), basis, mean, 0.0),
                     Projection(values, mean, basis))
    solves = {"pull": (lambda p: solve_images(p, "pull", pull_columns)) if spec.pulled else None,
              "taps": (lambda p: solve_images(p, "taps", tap_columns)) if spec.filtered else None,
              "basis": solve_basis}
    for solve in (solves[name] for name in ("pull", "taps", "basis") if name in which and solves[name]):
        solved = solve(parts)
        if solved.mse < parts.mse:
            parts = solved
    parts.coefficients = parts.projection = None
    return parts


def _ridge_solution(normal: np.ndarray, rhs: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The solution of (``normal`` + ridge I) x = ``rhs`` + ridge ``current``, the ridge :data:`RIDGE`
    times the mean of ``normal``'s diagonal."""
    ridge = RIDGE * max(float(np.mean(np.diagonal(normal))), 1e-30)
    return np.linalg.solve(normal + ridge * np.eye(normal.shape[0]), rhs + ridge * current)
