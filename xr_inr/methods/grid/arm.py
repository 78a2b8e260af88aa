"""The grid method's exact entropy model: decoding phases and the integer ARM.

Decoding order (phases)
    Each latent grid (h x w) is decoded in a few phases, coarse to fine, every
    channel of a level together: the point (0, 0), then for each stride
    s = S, S/2, ..., 2 (S the power of two >= max(h, w)) the "centres"
    (s/2 mod s, s/2 mod s) and then the "edges" (s/2 mod s, 0 mod s) and
    (0 mod s, s/2 mod s). A point's context is 12 already-decoded points
    (:func:`phases`): the 4 nearest at distance s/2 (diagonal for centres,
    axial for edges) and 8 more at the next ring. Offsets that leave the grid
    are mirrored (each axis on its own); if still outside, they read 0.
    A 100 x 100 grid takes 15 phases (about 400 wavefronts of a raster-order
    context before), so decoding is a few dozen large numpy steps. Within a
    phase, every all-zero context (about half of them in a trained stream)
    shares one ARM evaluation: same input, same integers.

Integer ARM (:func:`arm_integers`)
    Weights and biases are the stored integers (value * 2**e, one e <=
    MAX_EXPONENT for the whole ARM, |integer| < 2**15). For contexts c
    (|c| < 2**15): prediction P = c . w0 + b0 (units 2**-e); deviations
    d = c * 2**e - P; features sign(d) * log2(1 + |d| 2**-e) in units
    2**-FRACTION with Mitchell's log2 (bit length plus linear mantissa, read
    exactly off the IEEE-754 pattern, :func:`_compress`), plus the phase's
    stride feature times 2**FRACTION; two hidden layers
    h = clip(floor((W h + b 2**FRACTION) / 2**e), 0, HIDDEN_CAP) (units
    2**-FRACTION, ReLU); the output layer gives, in units 2**-(e + FRACTION),
    a location correction and log2 of the scale. Every value is an integer
    held in float64 and every sum of absolute products stays under 2**44
    (<= 255 hidden units), so BLAS gives the same result in any summation
    order, thread count or SIMD width. Indices are then taken with int64
    shifts: centre = round(mu), offset index a = round(8 (mu - centre)) in
    [-4, 4], scale index j = floor(8 log2 scale); the residual (latent -
    centre) is coded under the fixed tables (:mod:`xr_inr.core.entropy`).

Compiled phases
    :meth:`CodingModel.phase_parameters` runs the same arithmetic in C (``_arm.c``, built with the package,
    the ARM about 3x faster on a trained stream) when the extension is there and the CPU has AVX2 and
    FMA (:data:`FAST_COMPILED`), in numpy otherwise: the same integers either way (every value is
    exact, see above), which the tests check.

Only numpy and constriction (and the optional extension).
"""

from __future__ import annotations

import functools

import numpy as np

from ...core import entropy
from ...core import laplace_tables as lt
from ...core.products import SINGLE_THREAD_SIZE
from .model import CONTEXT_SIZE

try:
    from . import _arm as _compiled
except ImportError:  # built without a C compiler: the numpy twin, the same integers
    _compiled = None
FAST_COMPILED = _compiled is not None and _compiled.vectorised()
"""Whether phases run compiled: only where the CPU has the AVX2 + FMA build; the baseline build
(SSE2, two doubles per register) measured slower than numpy's BLAS here, and is kept for the tests."""

FRACTION = 8
"""Fractional bits of the ARM's features and hidden activations."""
HIDDEN_CAP = 2.0 ** (FRACTION + 12)
"""Hidden activations are clipped to [0, 4096) (keeps every sum exact in float64)."""
MAX_EXPONENT = 16
"""Largest ARM weight exponent e (weights are integers times 2**-e)."""
MAX_LATENT = 2**15
"""Latents must stay in (-MAX_LATENT, MAX_LATENT)."""
CHUNK_ROWS = 1024
"""Most contexts per ARM evaluation while coding (speed only: larger blocks leave the caches),
fewer for wide ARMs so that each product stays on the calling thread
(:data:`xr_inr.core.products.SINGLE_THREAD_SIZE`)."""
GATHER_ROWS = 2**16
"""Contexts gathered at once while coding (memory only: 1.5 MB of int16)."""
MAX_STRIDE = 32
"""Stride features are below this (bit lengths of grid sides)."""
COMPILED_WIDTH = 16
"""Hidden units the compiled ARM stores (``WIDTH`` in ``_arm.c``): narrower ARMs are padded to it
(and run by a kernel of 8, 12 or 16 units), wider ones (none of today's architectures) in numpy."""
PHASE_CACHE = 16
"""Grid shapes whose phases are kept (a store's levels and edge chunks: a few); unbounded, a reader
of streams of many shapes grew by about 100 bytes per grid point of every shape it had seen."""


@functools.lru_cache(maxsize=PHASE_CACHE)
def phases(height: int, width: int) -> tuple[tuple[np.ndarray, np.ndarray, int], ...]:
    """(points (n,), contexts (n, 12), stride feature) per phase. Points and contexts index the
    grid flattened row-major with one zero appended (index height * width reads 0); the stride
    feature, bit_length(s / 2), tells the ARM how far the context is (the first point: that of S)."""
    size = 1 << max(0, (max(height, width) - 1).bit_length())
    out = [(np.zeros(1, np.intp), np.full((1, 12), height * width, np.intp), size.bit_length())]
    s = size
    while s >= 2:
        h = s // 2
        centres = _lattice(np.arange(h, height, s), np.arange(h, width, s))
        near = ((-h, -h), (-h, h), (h, -h), (h, h))
        far = ((-h, -3 * h), (-h, 3 * h), (h, -3 * h), (h, 3 * h), (-3 * h, -h), (-3 * h, h), (3 * h, -h), (3 * h, h))
        out.append(_phase(centres, near + far, height, width) + (h.bit_length(),))
        edges = np.concatenate([_lattice(np.arange(h, height, s), np.arange(0, width, s)),
                                _lattice(np.arange(0, height, s), np.arange(h, width, s))])
        near = ((-h, 0), (0, -h), (0, h), (h, 0))
        far = ((-h, -s), (-h, s), (h, -s), (h, s), (-s, -h), (-s, h), (s, -h), (s, h))
        out.append(_phase(edges, near + far, height, width) + (h.bit_length(),))
        s = h
    return tuple(phase for phase in out if phase[0].size)


def _lattice(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    return np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1).reshape(-1, 2)


def _phase(points: np.ndarray, offsets, height: int, width: int):
    y, x = points[:, :1], points[:, 1:]
    dy, dx = np.array(offsets).T
    ny, nx = y + dy, x + dx
    ny = np.where((ny < 0) | (ny >= height), y - dy, ny)  # mirror
    nx = np.where((nx < 0) | (nx >= width), x - dx, nx)
    inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
    context = np.where(inside, ny * width + nx, height * width)
    return (y[:, 0] * width + x[:, 0]).astype(np.intp), context.astype(np.intp)


@functools.lru_cache(maxsize=PHASE_CACHE)
def all_contexts(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every phase's (points, contexts, stride features) concatenated, one row per point
    (for rate estimates and training); read-only, shared by every caller (cached)."""
    points, contexts, strides = zip(*phases(height, width))
    out = (np.concatenate(points), np.concatenate(contexts),
           np.concatenate([np.full(p.size, s) for p, s in zip(points, strides)]))
    for array in out:
        array.flags.writeable = False
    return out


def _compress(d: np.ndarray, e: int) -> np.ndarray:
    """sign(d) * log2(1 + |d| * 2**-e) in units 2**-FRACTION, floored, exact for integer d.

    log2 is Mitchell's, k + v / 2**k - 1 for v in [2**k, 2**(k+1)): in fixed point that is the
    IEEE-754 binary64 pattern of v = |d| + 2**e (exact, as |d| < 2**52) shifted right."""
    v = np.abs(d)
    v += 2.0**e
    pattern = v.view(np.int64)
    pattern >>= 52 - FRACTION
    pattern -= (1023 + e) << FRACTION
    magnitude = pattern.astype(np.float64)
    return np.copysign(magnitude, d, out=magnitude)


def prepare_arm(arm: list[tuple[np.ndarray, np.ndarray]], e: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The stored ARM integers (weight, bias) as float64 arrays for :func:`arm_integers`: weights
    transposed; hidden layers' weights and biases times 2**-e and their biases times 2**FRACTION,
    so that a hidden layer's products are multiples of 2**-e and its sums (< 2**44 * 2**-e) stay
    exact; the first hidden layer's last input row is the stride feature's."""
    (w0, b0), *hidden, (w3, b3) = arm
    scale = 2.0**-e
    return ([(w0[0].astype(np.float64), b0.astype(np.float64))]
            + [(w.T.astype(np.float64) * scale, b.astype(np.float64) * (2.0**FRACTION * scale)) for w, b in hidden]
            + [(w3.T.astype(np.float64), b3.astype(np.float64) * 2.0**FRACTION)])


def arm_integers(arm, e: int, context: np.ndarray, stride):
    """(mu, log2 scale) in units 2**-(e + FRACTION), int64, for integer contexts (n, 12) (float64)
    and their stride feature (a number, or one per row).

    ``arm``: :func:`prepare_arm` of the stored integers (values times 2**e)."""
    (w0, b0), *hidden, (w3, b3) = arm
    prediction = context @ w0 + b0[0]
    d = context * 2.0**e
    d -= prediction[:, None]
    h = _compress(d, e)
    for index, (w, b) in enumerate(hidden):
        if index == 0:  # the stride feature, stride * 2**FRACTION, is the last input
            h = h @ w[:-1]
            h += np.multiply.outer(np.asarray(stride, np.float64) * 2.0**FRACTION, w[-1]) + b
        else:
            h = h @ w
            h += b
        np.floor(h, out=h)
        np.clip(h, 0.0, HIDDEN_CAP, out=h)
    out = h @ w3
    out += b3
    mu = prediction * 2.0**FRACTION + out[:, 0]
    return mu.astype(np.int64), out[:, 1].astype(np.int64)


def _zero_contexts(arm, e: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`arm_integers` of an all-zero context for every stride feature (indexed by it)."""
    return arm_integers(arm, e, np.zeros((MAX_STRIDE, CONTEXT_SIZE)), np.arange(MAX_STRIDE))


def _nonzero_rows(rows: np.ndarray) -> np.ndarray:
    """Indices of the rows of an int16 (n, 12) array that hold a nonzero value (read 8 bytes at a time)."""
    words = rows.view(np.int64)
    return np.flatnonzero(functools.reduce(np.bitwise_or, words.T))


class CodingModel:
    """The ARM ready to code a stream's phases: :func:`prepare_arm`'s layers, their exponent ``e``,
    the outputs of the all-zero context (:func:`_zero_contexts`) and, where the extension is built,
    the layers padded to its width (:func:`_widened`)."""

    def __init__(self, arm, e: int):
        if not 0 <= e <= MAX_EXPONENT:  # the extension's shifts need it (streams are checked when unpacked)
            raise ValueError(f"the ARM's exponent must be in [0, {MAX_EXPONENT}]")
        self.arm, self.e = arm, e
        self.zero = _zero_contexts(arm, e)
        compiled = _compiled is not None and arm[2][0].shape[0] <= COMPILED_WIDTH
        self.widened = _widened(arm) if compiled else None
        self.compiled = compiled and FAST_COMPILED

    def phase_parameters(self, padded: np.ndarray, context: np.ndarray, stride, baseline: bool = False):
        """:func:`coding_indices` (centre, table) of every channel's points of a phase (channel-major),
        and their :func:`~xr_inr.core.entropy.grouping` (None where not computed), from the
        latents (int16, one zero appended per channel) and their stride feature (a number, or one
        per point: several phases at once): compiled where :data:`FAST_COMPILED`, else
        :func:`_numpy_phase_parameters`, the same integers. ``baseline``: the extension's build
        for the baseline instruction set, on any CPU (for the tests)."""
        if not (self.compiled or baseline and self.widened is not None):
            return *_numpy_phase_parameters(self.arm, self.e, padded, context, stride, self.zero), None
        n = context.shape[0]
        if padded.dtype != np.int16 or not padded.flags.c_contiguous or self.arm[1][0].shape[0] != CONTEXT_SIZE + 1:
            raise ValueError("phase_parameters: int16 latents in C order and the format's ARM layout expected")
        if context.shape != (n, CONTEXT_SIZE):
            raise ValueError(f"phase_parameters: contexts of {CONTEXT_SIZE} points expected")
        if np.ndim(stride) == 0:  # one for the whole phase (decoding)
            if not 0 <= stride < MAX_STRIDE:
                raise ValueError("phase_parameters: a stride feature out of [0, MAX_STRIDE)")
            strides = np.array([stride], np.int64)
        else:
            strides = np.ascontiguousarray(stride, np.int64)
            if strides.shape != (n,) or n and (strides.min() < 0 or strides.max() >= MAX_STRIDE):
                raise ValueError("phase_parameters: one stride feature per point, in [0, MAX_STRIDE), expected")
        total = padded.shape[0] * n
        centre, table, order = np.empty(total, np.int64), np.empty(total, np.intp), np.empty(total, np.intp)
        counts = np.zeros(lt.TABLES, np.intp)
        _compiled.phase_parameters(padded, padded.shape[0], padded.shape[1], np.ascontiguousarray(context, np.intp),
                                   n, strides, *self.widened, self.arm[2][0].shape[0], self.e, MAX_LATENT,
                                   lt.SCALE_MIN, lt.SCALE_MAX, lt.SPLIT, lt.OFFSETS, centre, table, lt.TABLES,
                                   counts, order, baseline)
        return centre, table, entropy.grouping(table, order, counts)


def place(padded: np.ndarray, points: np.ndarray, centre: np.ndarray, order: np.ndarray, residuals: np.ndarray):
    """A decoded phase into ``padded`` (int16 latents, C order): each channel's latents at ``points``
    are ``centre`` plus their residual (``residuals`` in ``order``, the phase's grouping); compiled
    where the extension is built, else :func:`_numpy_place`. ValueError, and nothing stored, if a
    latent is out of range."""
    if _compiled is None:
        return _numpy_place(padded, points, centre, order, residuals)
    channels, row = padded.shape
    total = channels * points.size
    arrays = [np.ascontiguousarray(a, t) for a, t in ((points, np.intp), (centre, np.int64), (order, np.intp),
                                                      (residuals, np.int64))]
    if padded.dtype != np.int16 or not padded.flags.c_contiguous or any(a.ndim != 1 for a in arrays) \
            or [a.size for a in arrays[1:]] != [total] * 3:
        raise ValueError("place: int16 latents in C order, and a centre, order index and residual per point expected")
    _compiled.place(padded, channels, row, arrays[0], points.size, *arrays[1:], np.empty(total, np.int64), MAX_LATENT)


def _numpy_place(padded, points, centre, order, residuals):
    """:func:`place` in numpy."""
    values = np.empty(centre.size, np.int64)
    values[order] = residuals
    values += centre
    if values.size and (values.min() <= -MAX_LATENT or values.max() >= MAX_LATENT):
        raise ValueError("a decoded latent is out of range")
    padded[:, points] = values.reshape(padded.shape[0], -1)


def _widened(arm) -> list[np.ndarray]:
    """The prepared ARM's arrays, hidden layers padded with zero weights to COMPILED_WIDTH units
    (a zero unit stays 0 and adds 0: the same outputs)."""
    (w0, b0), (w1, b1), (w2, b2), (w3, b3) = arm
    pad = COMPILED_WIDTH - w2.shape[0]
    return [np.ascontiguousarray(a) for a in (
        w0, b0, np.pad(w1, ((0, 0), (0, pad))), np.pad(b1, (0, pad)), np.pad(w2, ((0, pad), (0, pad))),
        np.pad(b2, (0, pad)), np.pad(w3, ((0, pad), (0, 0))), b3)]


def _numpy_phase_parameters(arm, e: int, padded: np.ndarray, context: np.ndarray, stride, zero):
    """:meth:`CodingModel.phase_parameters` in numpy.

    Contexts are gathered GATHER_ROWS at a time (memory: a few MB). An all-zero context (about
    half of them in a trained stream) takes ``zero``'s output; the ARM runs on the others,
    at most CHUNK_ROWS at a time."""
    n = context.shape[0]
    strides = np.broadcast_to(stride, (n,))
    mu = np.tile(zero[0][strides], padded.shape[0])
    log_scale = np.tile(zero[1][strides], padded.shape[0])
    widest = max(w.shape[0] * w.shape[1] for w, _ in arm[1:])
    chunk = max(1, min(CHUNK_ROWS, SINGLE_THREAD_SIZE // widest))
    group = max(1, GATHER_ROWS // n)
    gathered = np.empty((min(group, padded.shape[0]), n, CONTEXT_SIZE), np.int16)
    for first in range(0, padded.shape[0], group):
        last = min(first + group, padded.shape[0])
        for channel in range(first, last):  # one channel at a time: numpy's fast path, C order
            np.take(padded[channel], context, out=gathered[channel - first])
        rows = gathered[: last - first].reshape(-1, CONTEXT_SIZE)
        nonzero = _nonzero_rows(rows)
        rows = rows[nonzero].astype(np.float64)
        nonzero += first * n
        for start in range(0, nonzero.size, chunk):
            where = nonzero[start : start + chunk]
            rows_stride = stride if np.ndim(stride) == 0 else strides[where % n]  # one number: one bias row
            mu[where], log_scale[where] = arm_integers(arm, e, rows[start : start + chunk], rows_stride)
    return coding_indices(mu, log_scale, e)


def coding_indices(mu: np.ndarray, log_scale: np.ndarray, e: int):
    """(centre, table index) from :func:`arm_integers`' output: centre = round(mu), offset index
    a = round(8 (mu - centre)), scale index j = floor(8 log2 scale), the table that of (j, a)."""
    g = e + FRACTION
    centre = (mu + (1 << (g - 1))) >> g
    offset = ((mu - (centre << g)) + (1 << (g - 4))) >> (g - 3)
    centre = np.minimum(np.maximum(centre, -MAX_LATENT), MAX_LATENT)  # residuals of latents stay under 2**16
    return centre, lt.table_index(log_scale >> (g - 3), offset)


def _level_grids(spec, latents):
    for level, grid in enumerate(latents):
        if grid.shape[0]:
            yield spec.level_shape(level), grid.reshape(grid.shape[0], -1)


def _padded(flat: np.ndarray) -> np.ndarray:
    """Integer latents (channels, points) as int16 with one zero appended per channel (what
    contexts outside the grid read)."""
    if np.abs(flat).max() >= MAX_LATENT:
        raise ValueError("a latent is too large for the stream format")
    return np.concatenate([flat.astype(np.int16), np.zeros((flat.shape[0], 1), np.int16)], axis=1)


def encode_latents(spec, arm, e: int, latents: list[np.ndarray], encoder) -> None:
    """Code every latent grid (level by level, phase by phase) with the integer ARM
    (:func:`prepare_arm` of the stored integers, exponent ``e``)."""
    model = CodingModel(arm, e)
    for (h, w), flat in _level_grids(spec, latents):
        padded = _padded(flat)
        for points, context, stride in phases(h, w):
            centre, table, grouped = model.phase_parameters(padded, context, stride)
            entropy.encode_residuals(encoder, padded[:, points].reshape(-1).astype(np.int64) - centre, table, grouped)


def decode_latents(spec, arm, e: int, decoder) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The integer latent grids (float64, (channels, gh, gw) per level) that :func:`encode_latents` coded,
    and, where ``spec.pulled``, the coefficient images' :func:`coder_locations` (k, h, w)."""
    model = CodingModel(arm, e)
    latents, locations = [], None
    for level, channels in enumerate(spec.level_channels()):
        h, w = spec.level_shape(level)
        padded = np.zeros((channels, h * w + 1), np.int16)
        located = np.zeros((channels, h * w)) if level == 0 and spec.pulled else None
        if channels:
            for points, context, stride in phases(h, w):
                centre, table, grouped = model.phase_parameters(padded, context, stride)
                if located is not None:
                    located[:, points] = coder_locations(centre, table).reshape(channels, -1)
                if grouped is None:
                    grouped = entropy.grouping(table)
                order, tables, _, counts = grouped
                place(padded, points, centre, order, entropy.decode_grouped(decoder, tables, counts))
        latents.append(padded[:, :-1].reshape(channels, h, w).astype(np.float64))
        if located is not None:
            locations = located[: spec.components].reshape(spec.components, h, w)
    return latents, locations


def coder_locations(centre: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Where the entropy coder centred each latent's Laplace: its centre plus the table's offset
    (eighths; none for the split scales), from :func:`coding_indices` (float64, exact)."""
    return centre + lt.table_offsets(table) / 8.0


def coefficient_coding(spec, model: CodingModel, latents: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(centre, table index) of each coefficient image's latents (k, h, w each) as
    :func:`encode_latents` codes them with ``model``, from the integer ``latents`` (every phase at
    once, as in :func:`latent_bits`)."""
    h, w = spec.level_shape(0)
    flat = np.asarray(latents[0]).reshape(latents[0].shape[0], -1)
    points, context, stride = all_contexts(h, w)
    centre, table, _ = model.phase_parameters(_padded(flat), context, stride)
    out = []
    for values in (centre, table):
        placed = np.zeros(flat.shape, values.dtype)
        placed[:, points] = values.reshape(flat.shape[0], -1)
        out.append(placed[: spec.components].reshape(spec.components, h, w))
    return out[0], out[1]


def latent_locations(spec, model: CodingModel, latents: list[np.ndarray]) -> np.ndarray:
    """The coefficient images' :func:`coder_locations` (k, h, w), as :func:`decode_latents` finds them."""
    return coder_locations(*coefficient_coding(spec, model, latents))


def latent_bits(spec, model: CodingModel, latents: list[np.ndarray]) -> float:
    """Bits :func:`encode_latents` takes for ``latents`` with ``model`` (the tables' ideal bits). Every
    phase of a level is evaluated at once: a context reads only earlier phases, so each point's
    parameters are those it is coded with."""
    total = 0.0
    for (h, w), flat in _level_grids(spec, latents):
        points, context, stride = all_contexts(h, w)
        padded = _padded(flat)
        centre, table, _ = model.phase_parameters(padded, context, stride)
        total += entropy.residual_bits(padded[:, points].reshape(-1).astype(np.int64) - centre, table)
    return total
