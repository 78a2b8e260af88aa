"""The coefficient latents rounded again for rate and distortion, once the stream's coder is known.

Encoder side (numpy). Training leaves each latent the integer nearest its trained value. Once the ARM is
quantised and the linear parts solved (:func:`~xr_inr.methods.grid.payload.quantised_parameters`), what
another integer would cost is known: the bits it changes (its own under the Laplace the coder centres on
it, :func:`~xr_inr.core.entropy.symbol_bits`, and a share of those of the neighbours whose contexts read
it), and the squared error it adds, through its pull, its image's filter, the synthesis MLP (its Jacobian
where the pass starts) and the basis, to second order. :func:`rounded_again` moves coefficient latents by one
where the squared error plus lambda times the bits falls (as video
coders' rate-distortion optimised quantisation does), in passes over :data:`LATTICE` squared
interleaved sub-lattices, each from the coder's parameters and the error of the latents as the previous
one left them. After each pass the linear parts are solved again and the stream packed, and lambda is
scaled towards the stream's budget (a few more passes while the last stream is over it); the best
stream within budget is kept (docs/method.md, "The latents rounded again").
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ...core import entropy
from . import arm as lc
from .model import coefficients_at, gelu, pull_images, pulled_latents, synthesis_inputs, synthesise
from .payload import Packed, arm_from_params, dequantised, packed

LATTICE = 2
"""Latents moved together are this many pixels apart in both directions (the changes their 3 x 3 filters
spread overlap on a row or column; 3 apart, where they do not, gained as much in four cells measured,
for 1.3 times the time)."""
ELASTICITY = 5
"""After each pass lambda is multiplied by (stream size / aim) to this power (clipped to a factor of 4):
a stream's size moved by about a fifth of a change of lambda, in logarithms (San Diego, Samson and
Hydice Urban at 0.2 bpppb). Choosing lambda in each pass for the moves' predicted own bits instead missed
the aim by up to 20 % (docs/method.md)."""
LANDING = 3
"""Passes beyond the effort's while the last stream is over budget: at low rates the stream's size answers
lambda slowly and can come down onto the budget from above in more passes than the effort's (Samson and
Hydice Urban at 0.05 bpppb, default effort: every one of 6 passes over budget, 0.34 and 0.22 dB left
unused). Each such pass scales lambda by :data:`LANDING_STEP` times more than the one before."""
LANDING_STEP = 1.5
WINDOW = 5
"""A moved latent shares in the change of the bits of the latents within this many pixels (square, centred
on it): those whose contexts read it, in the finest phases (docs/method.md)."""
MAX_LATENT = 2**13
"""No latent is moved beyond this magnitude (the fit's own bound on the coefficient latents)."""


def rounded_again(start: Packed, target: np.ndarray, valid: np.ndarray | None, budget_bits: float, aim_bits: float,
                  passes: int) -> Packed | None:
    """The best stream within ``budget_bits`` among ``start`` and those of ``passes`` passes of rounding its
    latents again (:func:`moved_latents`; up to :data:`LANDING` more while the last stream is over budget),
    lambda steered towards ``aim_bits``; None when none is within budget."""
    best = start if 8 * len(start.payload) <= budget_bits else None
    fit, params = start.fit, start.params
    lam = start_lambda(fit, params, target, valid)
    done, over = 0, False
    while lam > 0 and (done < passes or over and done < passes + LANDING):
        moved = dataclasses.replace(fit, latents=moved_latents(fit, params, target, valid, lam))
        stream = packed(moved, target, valid, hint=params)
        fit, params = stream.fit, stream.params
        over = 8 * len(stream.payload) > budget_bits
        if not over and (best is None or stream.mse < best.mse):
            best = stream
        done += 1
        factor = float(np.clip((8 * len(stream.payload) / aim_bits) ** ELASTICITY, 0.25, 4.0))
        lam *= max(factor, LANDING_STEP ** (done - passes)) if over and done >= passes else factor
    return best


def _error_gradient(fit, params, target: np.ndarray, valid: np.ndarray | None):
    """A function of the latents and the coefficient images' coder locations that gives half the
    gradient of the decoded squared error with respect to the coefficients, (k, h, w): E B^T with E
    the decoded values less ``target`` (zero where not ``valid``); without a mask, from the
    coefficients C alone, as C B B^T - (X - m) B^T."""
    spec = fit.spec
    mean, basis, taps, pull, synthesis = dequantised(params, spec)
    ys, xs = np.arange(spec.height, dtype=np.float64), np.arange(spec.width, dtype=np.float64)
    shape = (spec.components, spec.height, spec.width)
    if valid is None:
        projected = (target.reshape(spec.bands, -1).T - mean) @ basis.T
        gram = basis @ basis.T

    def gradient(latents, location):
        if spec.pulled:
            latents = pulled_latents(spec, latents, location, pull)
        if valid is not None:
            error = synthesise(spec, latents, fit.step, synthesis, basis, mean, ys, xs, taps=taps) - target
            return np.einsum("bhw,rb->rhw", error * valid, basis)
        c = coefficients_at(spec, latents, fit.step, synthesis, ys, xs, taps)
        return (c @ gram - projected).T.reshape(shape)

    return gradient


def start_lambda(fit, params, target: np.ndarray, valid: np.ndarray | None) -> float:
    """The high-rate slope of the squared error per bit of the coefficient latents: 2 ln 2 times the
    squared error within the basis's span (what their quantisation leaves; the rest no latent can
    reduce) per coefficient latent."""
    spec = fit.spec
    model = lc.CodingModel(*arm_from_params(params, spec))
    location = lc.latent_locations(spec, model, fit.latents) if spec.pulled else None
    basis = dequantised(params, spec)[1]
    flat = _error_gradient(fit, params, target, valid)(fit.latents, location).reshape(spec.components, -1)
    in_span = float(np.sum(flat * (np.linalg.pinv(basis @ basis.T) @ flat)))
    return 2 * math.log(2) * in_span / flat.size


def moved_latents(fit, params, target: np.ndarray, valid: np.ndarray | None, lam: float) -> list[np.ndarray]:
    """``fit``'s latents with each coefficient latent moved by -1, 0 or +1, whichever gives the least
    squared error (``target``'s, over the ``valid`` elements) plus ``lam`` times the bits it changes, one
    sub-lattice of :data:`LATTICE` x :data:`LATTICE` after another (:func:`_bits_changes`). A move's error
    goes through the synthesis MLP as its Jacobian where the pass starts has it (:func:`_synthesis_jacobian`)."""
    spec, step, k = fit.spec, fit.step, fit.spec.components
    model = lc.CodingModel(*arm_from_params(params, spec))  # built once: 12 codings per pass
    _, basis, taps, pull, synthesis = dequantised(params, spec)
    error_gradient = _error_gradient(fit, params, target, valid)
    latents = [np.array(z, np.int64) for z in fit.latents]
    images = latents[0][:k]  # a view: moved in place
    kernel = np.zeros((k, 9)) if taps is None else taps.copy()
    kernel[:, 4] += 1.0  # a latent's share of its filtered image: itself plus the centre tap
    jacobian = curvature = None
    for sy in range(LATTICE):
        for sx in range(LATTICE):
            centre, table = lc.coefficient_coding(spec, model, latents)
            location = lc.coder_locations(centre, table) if spec.pulled else None
            if jacobian is None:
                jacobian = _synthesis_jacobian(spec, latents, location, step, taps, pull, synthesis)
                curvature = step**2 * _squared_sizes(jacobian, basis @ basis.T) * np.sum(kernel**2, axis=1)
                curvature = curvature.T.reshape(k, spec.height, spec.width)  # per pixel, away from edges
            gradient = error_gradient(latents, location).reshape(k, -1).T
            gradient = np.matmul(gradient[:, None], jacobian)[:, 0].T.reshape(k, spec.height, spec.width)
            if taps is not None:
                gradient = _filter_adjoint(gradient, taps)
            at = (slice(None), slice(sy, None, LATTICE), slice(sx, None, LATTICE))
            n = images[at].copy()

            def pulled(values):
                return pull_images(values, location[at], pull) if spec.pulled else values.astype(np.float64)

            base = pulled(n)
            best_cost, best_move = np.zeros(n.shape), np.zeros(n.shape, np.int64)
            for move, bits_change in zip((-1, 1), _bits_changes(spec, model, latents, at, centre, table)):
                change = pulled(n + move) - base
                cost = 2 * step * change * gradient[at] + change**2 * curvature[at] + lam * bits_change
                better = (cost < best_cost) & (np.abs(n + move) <= MAX_LATENT)
                best_cost[better], best_move[better] = cost[better], move
            images[at] = n + best_move
    return latents


def _synthesis_jacobian(spec, latents, location, step, taps, pull, synthesis) -> np.ndarray:
    """(pixels, k, k): how each pixel's coefficients (:func:`~xr_inr.methods.grid.model.synthesised`) move
    with the coefficient images times the step there (its inputs' first k): the identity plus the synthesis
    MLP's Jacobian. Leaving the MLP out, passes of Samson at 0.05 bpppb raised both the error and the bits
    (docs/method.md, "The latents rounded again")."""
    k, pixels = spec.components, spec.height * spec.width
    identity = np.broadcast_to(np.eye(k), (pixels, k, k))
    if not spec.hidden:
        return identity
    if spec.pulled:
        latents = pulled_latents(spec, latents, location, pull)
    ys, xs = np.arange(spec.height, dtype=np.float64), np.arange(spec.width, dtype=np.float64)
    x = synthesis_inputs(spec, latents, step, ys, xs, taps)
    *hidden, (weight, _) = synthesis
    carried = None  # (pixels, units, k): how a hidden layer's outputs move with the k inputs
    for w, b in hidden:
        pre = x @ w.T + b
        slope = _gelu_slope(pre)
        x = gelu(pre, np.zeros_like(b))
        carried = (w[:, :k] if carried is None else w @ carried) * slope[:, :, None]
    return identity + weight @ carried


def _squared_sizes(jacobian: np.ndarray, gram: np.ndarray, rows: int = 4096) -> np.ndarray:
    """(pixels, k): the squared size of the spectrum that a unit change of each input moves each pixel by,
    J_r^T B B^T J_r for each column J_r of ``jacobian`` and ``gram`` = B B^T (a few thousand pixels at a time:
    memory)."""
    out = np.empty((jacobian.shape[0], jacobian.shape[2]))
    for start in range(0, jacobian.shape[0], rows):
        part = jacobian[start : start + rows]
        out[start : start + rows] = np.sum(part * (gram @ part), axis=1)
    return out


def _gelu_slope(x: np.ndarray) -> np.ndarray:
    """The derivative of :func:`~xr_inr.methods.grid.model.gelu` (torch's tanh approximation) at ``x``:
    0.5 (1 + t) + 0.5 a x (1 - t^2) (1 + 3 c x^2), with t = tanh(a x (1 + c x^2))."""
    a, c = 0.7978845608028654, 0.044715
    square = x * x
    t = square * c
    t += 1.0
    t *= x
    t *= a
    np.tanh(t, out=t)
    slope = t * t
    np.subtract(1.0, slope, out=slope)
    slope *= x
    slope *= 0.5 * a
    square *= 3 * c
    square += 1.0
    slope *= square
    t += 1.0
    t *= 0.5
    slope += t
    return slope


def _bits_changes(spec, model: lc.CodingModel, latents: list[np.ndarray], at: tuple, centre: np.ndarray,
                  table: np.ndarray) -> list[np.ndarray]:
    """For the coefficient latents at ``at`` (a sub-lattice), the bits that moving each by -1, then by +1
    changes: its own, exact with all of them moved alike, and its share of the change in the other
    latents' bits within :data:`WINDOW` (whose contexts read it), each of those shared evenly among the
    moved latents in its window. ``centre`` and ``table``: the coder's, before any move."""
    images = latents[0][: spec.components]
    bits = entropy.symbol_bits(images - centre, table)
    moved = np.zeros(images.shape[1:], bool)
    moved[at[1:]] = True
    sharing = np.maximum(_window_sums(moved[None].astype(np.float64)), 1.0)
    out = []
    for move in (-1, 1):
        images[at] += move
        moved_centre, moved_table = lc.coefficient_coding(spec, model, latents)
        change = entropy.symbol_bits(images - moved_centre, moved_table) - bits
        images[at] -= move
        out.append(change[at] + _window_sums(np.where(moved, 0.0, change) / sharing)[at])
    return out


def _window_sums(values: np.ndarray) -> np.ndarray:
    """Each point's sum of ``values`` (k, h, w) over the :data:`WINDOW` x :data:`WINDOW` pixels around it
    (zero beyond the edges)."""
    r, n = WINDOW // 2, WINDOW
    total = np.pad(values, ((0, 0), (r + 1, r), (r + 1, r))).cumsum(1).cumsum(2)
    return total[:, n:, n:] - total[:, :-n, n:] - total[:, n:, :-n] + total[:, :-n, :-n]


def _filter_adjoint(gradient: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """What ``gradient`` (k, h, w), with respect to :func:`~xr_inr.methods.grid.model.filter_images`'
    output, is with respect to its input (the transpose of the filter, its repeated edges included)."""
    k, height, width = gradient.shape
    spread = np.zeros((k, height + 2, width + 2))
    for tap in range(9):
        dy, dx = divmod(tap, 3)
        spread[:, dy:dy + height, dx:dx + width] += taps[:, tap, None, None] * gradient
    spread[:, 1] += spread[:, 0]
    spread[:, -2] += spread[:, -1]
    spread[:, :, 1] += spread[:, :, 0]
    spread[:, :, -2] += spread[:, :, -1]
    return gradient + spread[:, 1:-1, 1:-1]
