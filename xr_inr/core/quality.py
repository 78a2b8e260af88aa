"""Quality targets: the smallest stream of a block whose PSNR meets a target (``INRCodec(psnr=...)``).

The codec has no knob that sets its PSNR: it fits a network within a bit
budget. :func:`encode_to_psnr` therefore searches the budget: it encodes the
block at one rate (bpppb), decodes the stream with the real decoder
(:func:`~xr_inr.core.decode.decode_block`, so what is measured is what is
stored), measures its PSNR and moves the rate (:func:`search`) until the
smallest rate that meets the target is bracketed within :data:`TOLERANCE`,
or :data:`MAX_ENCODES` encodes were made. It returns the smallest stream that
met the target, or, when none did, the one of highest PSNR with a
:class:`~xr_inr.core.encode.QualityWarning`.

PSNR is the project's (:mod:`xr_inr.metrics`) over the block: 10 log10(R^2 / MSE),
R = max - min of the block's valid values, the MSE over those values (NaN,
masked nodata and an edge chunk's padding left out, as the codec leaves them
out of the fit).

Each encode is a full fit, so a target costs several fits per block (the
number is recorded: :attr:`QualityResult.encodes`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .. import metrics
from .encode import QualityWarning, emit_warning, encode_block
from .stream import Method, Reader

MAX_PSNR = 200.0
"""Highest target accepted, in dB (float64 values carry ~320 dB, float32 ~144 dB)."""
MAX_ENCODES = 6
"""Encodes (fits) per block at most."""
TOLERANCE = 0.05
"""The search ends once the smallest rate meeting the target is known within this share of itself."""
SLOPE_DB_PER_DOUBLING = 5.0
"""PSNR gained by doubling the rate before two tries measure it: 4-5.5 dB on the shared cubes
between 0.1 and 0.8 bpppb (docs/benchmarks.md; the Jasper fixture crop); learnt from the tries after."""
SLOPE_RANGE = (1.0, 20.0)
"""Bounds of a measured slope (dB per doubling): a flat or noisy pair of tries does not send the rate far."""
PLATEAU_DB = 0.1
"""Two tries closer than this in PSNR sit on a plateau of the rate-distortion curve."""
MAX_STEP = 8.0
"""Largest factor between the rate of two tries while the target is not bracketed."""
MIN_BPPPB = 1e-3
MAX_BPPPB = 64.0
"""Rates searched: from MIN_BPPPB to the codec's largest budget (``xr_inr.core.codec.MAX_BPPPB``)."""


def start_rate(target: float) -> float:
    """The first rate tried: 0.1 bpppb for 45 dB, :data:`SLOPE_DB_PER_DOUBLING` dB per doubling
    (the grid method at 1000 steps gives 38-59 dB at 0.1 bpppb on the shared cubes), within 0.01-8."""
    return float(np.clip(0.1 * 2.0 ** ((target - 45.0) / SLOPE_DB_PER_DOUBLING), 0.01, 8.0))


@dataclass
class Try:
    """One encode of the search: the rate asked (the budget), the stream, its PSNR, its bytes and rate."""

    bpppb: float
    stream: bytes
    psnr: float
    nbytes: int
    rate: float
    """The stream's own bpppb (above ``bpppb`` when the stream does not fit the budget)."""
    smallest: bool = False
    """The stream is over its budget and holds a network: the method's smallest for this block
    (lower budgets give it again)."""

    @property
    def at(self) -> float:
        """Where the try sits on the rate axis: the budget, or the stream's own rate when it is over
        budget (the method's smallest network, or float16 values when no network fits: what the
        budgets below give)."""
        return max(self.bpppb, self.rate)


@dataclass
class QualityResult:
    """What :func:`search` chose: ``stream`` and its ``psnr``; ``met`` whether it meets the target."""

    target: float
    stream: bytes
    psnr: float
    met: bool
    tries: list[Try] = field(default_factory=list)

    @property
    def encodes(self) -> int:
        return len(self.tries)

    def record(self) -> dict:
        """What a store keeps of it per chunk (JSON: an infinite PSNR, an exact stream, is "inf")."""
        return {"psnr": self.psnr if math.isfinite(self.psnr) else str(self.psnr), "encodes": self.encodes}


def check_target(psnr) -> float:
    """``psnr`` as a float, else ValueError: a finite number in (0, :data:`MAX_PSNR`] dB."""
    if isinstance(psnr, bool) or not isinstance(psnr, (int, float, np.integer, np.floating)) \
            or not math.isfinite(psnr) or not 0 < psnr <= MAX_PSNR:
        raise ValueError(f"psnr must be a target in dB, a number in (0, {MAX_PSNR:g}], got {psnr!r}")
    return float(psnr)


def block_psnr(block: np.ndarray, decoded: np.ndarray, *, fill_value: float | None = None,
               mask_fill: bool = False) -> float:
    """:func:`xr_inr.metrics.psnr` of ``decoded`` (a chunk, possibly padded beyond ``block``) against
    ``block``, over the block's valid values (not NaN; not equal to ``fill_value`` when ``mask_fill``);
    inf when exact or when no value is valid."""
    original = np.array(block, dtype=np.float64)  # a copy: masked values become NaN
    decoded = np.asarray(decoded, dtype=np.float64)[tuple(slice(0, n) for n in original.shape)]
    if mask_fill and fill_value is not None and not math.isnan(fill_value):
        original[original == fill_value] = np.nan
    if not np.isfinite(original).any():
        return math.inf
    value = metrics.psnr(original, decoded)
    return math.inf if math.isnan(value) else value  # nan: 0 / 0, an exact constant block


def encode_to_psnr(codec, block: np.ndarray, *, padded_shape=None, fill_value: float | None = None,
                   mask_fill: bool = False, max_encodes: int = MAX_ENCODES,
                   tolerance: float = TOLERANCE) -> QualityResult:
    """The smallest stream of ``block`` whose PSNR meets ``codec.psnr`` (the arguments of
    :func:`~xr_inr.core.encode.encode_block`; ``codec``'s other settings are used for every encode)."""
    from .decode import decode_block

    target = check_target(codec.psnr)

    def measure(rate: float) -> Try:
        trial = copy.copy(codec)
        trial.bpppb, trial.psnr = rate, None
        stream = encode_block(trial, block, padded_shape=padded_shape, fill_value=fill_value,
                              mask_fill=mask_fill, warn=False)
        achieved = block_psnr(block, decode_block(stream), fill_value=fill_value, mask_fill=mask_fill)
        size = np.asarray(block).size
        network = Reader(stream).header.method not in (Method.CONSTANT, Method.RAW)
        over = len(stream) > math.floor(rate * size / 8)
        return Try(rate, stream, achieved, len(stream), 8 * len(stream) / size, smallest=network and over)

    return search(measure, target, start_rate(target), max_encodes=max_encodes, tolerance=tolerance)


def search(measure: Callable[[float], Try], target: float, start: float, *, max_encodes: int = MAX_ENCODES,
           tolerance: float = TOLERANCE, lowest: float = MIN_BPPPB, highest: float = MAX_BPPPB) -> QualityResult:
    """Search the rate for the smallest stream whose PSNR meets ``target``; ``measure(bpppb)`` encodes once.

    ``hi`` is the lowest rate whose stream met the target, ``lo`` the highest rate below it whose stream
    did not (a stream over its budget counts at its own rate, :attr:`Try.at`). Until both are known,
    the rate moves by the PSNR it lacks (or has to spare) over the slope in dB per doubling of the rate
    measured on the two tries nearest the target (:data:`SLOPE_DB_PER_DOUBLING` before there are two),
    by at most :data:`MAX_STEP` and at least ``tolerance`` (a doubling when the last two tries sit on a
    plateau, :data:`PLATEAU_DB`); then inside [lo, hi] (:func:`_inside`: the
    secant of its ends, a tolerance step from each end, so that a pass next to ``lo`` or a fail next
    to ``hi`` ends the search). It ends when ``hi <= lo * (1 + tolerance)``, after
    ``max_encodes`` encodes, at ``lowest`` / ``highest``, when the smallest stream that met the target is
    the method's smallest network (:attr:`Try.smallest`: no lower budget gives a smaller one), or when a
    rate gives the very bytes an earlier rate gave (a constant block, float16 values, a network at its
    finest step) that met the target; below it the search goes on up (a larger budget can bring a
    larger architecture).
    Of the streams that met the target the smallest is returned; when none did, the one of highest
    PSNR, with a :class:`QualityWarning`.
    """
    if max_encodes < 1:
        raise ValueError(f"max_encodes must be >= 1, got {max_encodes!r}")
    tries: list[Try] = []
    rate = float(np.clip(start, lowest, highest))
    while True:
        tries.append(measure(rate))
        repeated = any(t.stream == tries[-1].stream for t in tries[:-1])
        if len(tries) >= max_encodes or (repeated and tries[-1].psnr >= target):
            break
        lo, hi = _bracket(tries, target)
        if hi is not None and lo is not None and hi <= lo * (1 + tolerance):
            break
        if (hi is None and lo >= highest) or (lo is None and hi <= lowest):
            break
        if any(t.smallest and t.psnr >= target and t.at == hi for t in tries):
            break
        rate = _next_rate(tries, target, lo, hi, tolerance, lowest, highest)
    return _choose(tries, target)


def _bracket(tries: list[Try], target: float) -> tuple[float | None, float | None]:
    passed = [t.at for t in tries if t.psnr >= target]
    hi = min(passed) if passed else None
    failed = [t.at for t in tries if t.psnr < target and (hi is None or t.at < hi)]
    return (max(failed) if failed else None), hi


def _slope(pair: list[Try]) -> float:
    """dB per doubling of the rate between the first two tries of ``pair`` at different rates."""
    for other in pair[1:]:
        if other.at != pair[0].at:
            slope = (pair[0].psnr - other.psnr) / math.log2(pair[0].at / other.at)
            return float(np.clip(slope, *SLOPE_RANGE))
    return SLOPE_DB_PER_DOUBLING


def _next_rate(tries, target, lo, hi, tolerance, lowest, highest) -> float:
    step = 1 + tolerance
    if lo is not None and hi is not None:
        return float(np.clip(_inside(tries, target, lo, hi, step), lowest, highest))
    finite = sorted((t for t in tries if math.isfinite(t.psnr)), key=lambda t: abs(t.psnr - target))
    if finite:
        anchor = finite[0]
        guess = anchor.at * 2.0 ** ((target - anchor.psnr) / _slope(finite))
    else:  # every stream so far exact: try well below
        guess = hi / MAX_STEP
    if len(tries) >= 2 and abs(tries[-1].psnr - tries[-2].psnr) < PLATEAU_DB:
        step = 2.0  # a plateau (an architecture whose quality the rate does not change): leave it
    if lo is None:  # every try met the target: go down
        guess = min(max(guess, hi / MAX_STEP), hi / step)
    else:  # none did: go up
        guess = max(min(guess, lo * MAX_STEP), lo * step)
    return float(np.clip(guess, lowest, highest))


def _inside(tries: list[Try], target: float, lo: float, hi: float, step: float) -> float:
    """The next rate inside the bracket [lo, hi]: where the secant of its ends (PSNR against log rate)
    crosses the target, a tolerance step from each end; the end kept by the last tries weighs half as
    much for each (Illinois: a curved PSNR does not keep the search at one end); bisection on a plateau
    (the last two PSNRs within :data:`PLATEAU_DB`: a step of the method's architectures, whose quality
    the rate does not change), or when the bracket is within two tolerance steps."""
    low = max((t for t in tries if t.psnr < target and t.at == lo), key=lambda t: t.psnr)
    high = min((t for t in tries if t.psnr >= target and t.at == hi), key=lambda t: t.psnr)
    plateau = len(tries) >= 2 and abs(tries[-1].psnr - tries[-2].psnr) < PLATEAU_DB
    if hi <= lo * step**2 or plateau or not (math.isfinite(low.psnr) and math.isfinite(high.psnr)):
        return math.sqrt(lo * hi)
    p_lo, p_hi = low.psnr, high.psnr
    kept = _kept(tries, target)
    if kept > 1 and tries[-1].psnr >= target:  # passes kept coming: lo has not moved
        p_lo = target - (target - p_lo) / 2 ** (kept - 1)
    elif kept > 1:
        p_hi = target + (p_hi - target) / 2 ** (kept - 1)
    fraction = (target - p_lo) / (p_hi - p_lo) if p_hi > p_lo else 0.5
    guess = lo * (hi / lo) ** fraction
    return min(max(guess, lo * step), hi / step)


def _kept(tries: list[Try], target: float) -> int:
    """How many of the last tries, each made inside a bracket, fell on the same side of the target."""
    side = tries[-1].psnr >= target
    count = 0
    for n in range(len(tries) - 1, 0, -1):
        if (tries[n].psnr >= target) != side or None in _bracket(tries[:n], target):
            break
        count += 1
    return count


def _choose(tries: list[Try], target: float) -> QualityResult:
    met = [t for t in tries if t.psnr >= target]
    if met:
        best = min(met, key=lambda t: (t.nbytes, -t.psnr))
    else:
        best = max(tries, key=lambda t: t.psnr)
        emit_warning(f"no stream met the {target:g} dB target in {len(tries)} encodes: keeping the best, "
                     f"{best.psnr:.2f} dB at {best.bpppb:.3g} bpppb ({best.nbytes} bytes)", QualityWarning,
                     stacklevel=4)
    return QualityResult(target, best.stream, best.psnr, bool(met), tries)
