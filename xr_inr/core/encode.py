"""Encoding one block: checks, padding, NaN mask, special streams, then the method's payload.

:func:`encode_block` is what :meth:`INRCodec.encode` runs (:func:`encode_blocks`
for several blocks fitted together, as the accessor does on a GPU). It writes the
stream container (:mod:`xr_inr.core.stream`) and leaves the payload of a
network to the chosen method (:mod:`xr_inr.methods`), which fits it with
torch. Blocks that need no network (constant) or cannot hold one within the
budget (float16 values) are stored here.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import warnings

import numpy as np

from . import stream as bs


class BudgetWarning(UserWarning):
    """A stream came out above its bit budget (the block is too small for the rate)."""


class QualityWarning(UserWarning):
    """A stream whose quality falls short: within budget but expected to collapse (its NaN/nodata mask eats
    the budget), or no stream met a PSNR target (:mod:`xr_inr.core.quality`)."""


MAX_MAGNITUDE = float(np.finfo(np.float64).max) / 4
"""Largest absolute value a block may hold: fits centre and scale values in float64
(a PCA of values near +-1.7e308 overflows; up to a quarter of that, fits run)."""

MASK_SHARE_WARNED = 0.25
"""A mask taking more than this share of the budget warns (:class:`QualityWarning`): measured on
the Jasper crop at 1.0 bpppb (300 steps), scattered NaN at 2 % / 5 % / 10 % of the elements took 20 / 37 / 57 %
of the budget and cost 6 / 8 / 11 dB."""


_COLLECTED: contextvars.ContextVar[list | None] = contextvars.ContextVar("xr_inr_collected_warnings", default=None)


def emit_warning(message: str, category: type[Warning], stacklevel: int = 2) -> None:
    """``warnings.warn``, or, inside :func:`collected_warnings` (in this thread), kept for the caller."""
    sink = _COLLECTED.get()
    if sink is None:
        warnings.warn(message, category, stacklevel=stacklevel + 1)
    else:
        sink.append((category, message))


@contextlib.contextmanager
def collected_warnings():
    """Collect the encoder's warnings (:func:`emit_warning`) as (category, message) pairs instead of issuing them.

    A Dask task runs in a worker thread or process whose warnings the user would not see (a
    ``dask.distributed`` worker only logs them); the task returns them and the client issues them,
    naming the chunk. A context variable, not ``warnings.catch_warnings``: that one changes the whole
    process's warning state and is not safe while other threads encode."""
    sink: list = []
    token = _COLLECTED.set(sink)
    try:
        yield sink
    finally:
        _COLLECTED.reset(token)


def over_budget_message(nbytes: int, n_values: int, bpppb: float, why: str) -> str:
    """The one warning of a stream over its budget (a :class:`BudgetWarning`): its rate, the budget, and why."""
    return f"{8 * nbytes / n_values:.3g} bpppb, over the {bpppb} bpppb budget: {why}"


def validated_block(buf) -> np.ndarray:
    """``buf`` as a 3-D array the stream format can hold, else TypeError/ValueError."""
    block = np.asarray(buf)
    if not block.dtype.isnative:  # e.g. big-endian ">u2" from a file: the same values in native order
        block = block.astype(block.dtype.newbyteorder("="))
    if block.dtype not in bs.DTYPE_CODES:
        supported = ", ".join(str(d) for d in bs.DTYPE_CODES)
        raise TypeError(f"unsupported dtype {block.dtype}; supported: {supported}")
    if block.ndim != 3:
        raise ValueError(f"expected a 3-D block (bands and two spatial axes), got {block.ndim}-D shape {block.shape}")
    if block.size == 0:
        raise ValueError(f"cannot encode an empty block of shape {block.shape}")
    if max(block.shape) >= 2**32:
        raise ValueError(f"block axis too long for the stream format: {block.shape}")
    if block.dtype.kind == "f":
        if np.isinf(block).any():
            raise ValueError("block contains +/-inf values, which cannot be represented")
        if block.dtype == np.float64 and (np.abs(block) > MAX_MAGNITUDE).any():  # NaN compares False
            raise ValueError(f"block holds values beyond +/-{MAX_MAGNITUDE:.3g}, too large to fit in float64 "
                             "arithmetic; scale the data first")
    return block


def check_device(device: str | None) -> None:
    """ValueError unless torch can fit on ``device`` (None: CUDA when present, else CPU)."""
    from ..methods import fitting

    try:
        chosen = fitting.pick_device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}: {err}") from None
    if chosen.type == "cuda" and not fitting.torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch finds no CUDA device here; use device='cpu' "
                         "or None")


def limit_blas(threads: int | None):
    """numpy's BLAS limited to ``threads`` threads in this process: fits in several threads, each
    multiplying on every core, slow each other down (two fit tasks in the threaded scheduler compressed
    1.2x as fast as one instead of 1.65x: docs/benchmarks.md, "BLAS threads in fit tasks"). Returns
    threadpoolctl's limiter (a context manager; its ``restore_original_limits`` gives the previous
    counts back), or None where ``threads`` is None or threadpoolctl (the ``fit`` extra) is not installed.

    Set it from the main thread where one can: OpenBLAS ignores a change made in another thread once
    one was made in the main thread."""
    if threads is None:
        return None
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=threads, user_api="blas")


def valid_extent(chunk: np.ndarray, fill_value: float) -> tuple[int, ...]:
    """Shape of ``chunk`` without its trailing slices made only of ``fill_value`` (NaN matches NaN)."""
    is_fill = np.isnan(chunk) if math.isnan(fill_value) else chunk == fill_value
    extent = []
    for axis in range(chunk.ndim):
        other = tuple(a for a in range(chunk.ndim) if a != axis)
        keep = ~is_fill.all(axis=other)
        extent.append(int(np.flatnonzero(keep)[-1]) + 1 if keep.any() else 0)
    return tuple(extent)


def _checked_fill(block: np.ndarray, padded_shape, fill_value):
    """(padded shape, fill value or None) after checking they fit the block."""
    padded = tuple(block.shape) if padded_shape is None else tuple(int(n) for n in padded_shape)
    if len(padded) != 3 or any(p < n for p, n in zip(padded, block.shape, strict=True)):
        raise ValueError(f"padded shape {padded_shape} does not hold a block of shape {block.shape}")
    if max(padded) >= 2**32:
        raise ValueError(f"chunk axis too long for the stream format: {padded}")
    if math.prod(padded) > bs.MAX_BLOCK_VALUES:
        raise ValueError(f"a {padded} chunk has more values than a stream may hold ({bs.MAX_BLOCK_VALUES}): "
                         "use smaller chunks")
    if fill_value is None:
        if padded != block.shape:
            raise ValueError("a padded block needs a fill_value")
        return padded, None
    fill_value = float(fill_value)
    if block.dtype.kind in "iu":
        info = np.iinfo(block.dtype)
        if not (math.isfinite(fill_value) and info.min <= fill_value <= info.max):
            raise ValueError(f"fill value {fill_value} does not fit {block.dtype}")
    elif math.isinf(fill_value):
        raise ValueError("the fill value cannot be +/-inf")
    return padded, fill_value


def encode_block(codec, block, *, padded_shape=None, fill_value: float | None = None,
                 mask_fill: bool = False, warn: bool = True) -> bytes:
    """Encode ``block`` (the valid region of a chunk) at ``codec.bpppb`` with ``codec``'s settings (see
    :meth:`xr_inr.INRCodec.encode_block`; a PSNR target is searched by :mod:`xr_inr.core.quality`, which
    calls this at several rates with ``warn=False``: no warning about the budget, which it chooses itself)."""
    options = dict(padded_shape=padded_shape, fill_value=fill_value, mask_fill=mask_fill)
    [(stream, caught)] = encode_blocks(codec, [block], [options], warn=warn)
    for category, message in caught:
        emit_warning(message, category, stacklevel=3)
    return stream


def encode_blocks(codec, blocks, options: list[dict] | None = None, warn: bool = True) -> list[tuple[bytes, list]]:
    """Encode several blocks as :func:`encode_block` does, the method fitting them together where it can
    ("grid": blocks of one architecture as one batch, which a GPU fits in one pass). ``options``: each
    block's keyword arguments of :func:`encode_block` (``padded_shape``, ``fill_value``, ``mask_fill``).
    Returns each block's stream and its warnings as (category, message) pairs, not issued."""
    from ..methods import BY_NAME

    pending = [_Block(codec, block, warn=warn, **option)
               for block, option in zip(blocks, options or [{}] * len(blocks), strict=True)]
    fitted = [block for block in pending if block.stream is None]
    if fitted:
        check_device(codec.device)
        method = BY_NAME[codec.method]
        payloads = method.encode([block.cube for block in fitted], [8 * block.budget_bytes for block in fitted],
                                 [8 * block.fixed_bytes for block in fitted], codec)
        for block, payload in zip(fitted, payloads, strict=True):
            block.finish(method, payload)
    return [(block.stream, block.warnings) for block in pending]


class _Block:
    """One block on its way to a stream: checked, with its header, NaN mask and budget. ``stream`` is
    set at once when no network is needed (a constant block), else by :meth:`finish`."""

    def __init__(self, codec, block, *, padded_shape=None, fill_value: float | None = None, mask_fill: bool = False,
                 warn: bool = True):
        block = validated_block(block)
        padded, fill_value = _checked_fill(block, padded_shape, fill_value)
        has_fill = fill_value is not None
        cube = np.moveaxis(block, codec.band_axis, 0).astype(np.float64)
        nan = np.isnan(cube)
        if mask_fill and has_fill and not math.isnan(fill_value):
            nan |= cube == fill_value
        finite = cube[~nan]
        has_nan = bool(nan.any()) and finite.size > 0
        self._codec, self._shape, self._size, self._warn = codec, block.shape, block.size, warn
        self.warnings: list[tuple[type[Warning], str]] = []
        self._mask = bs.pack_mask(nan) if has_nan else b""
        self._header = bs.Header(bs.Method.CONSTANT, block.dtype, codec.band_axis, block.shape, has_nan,
                                 padded if has_fill else None, fill_value)
        self.stream: bytes | None = None
        if finite.size == 0:
            self.stream = self._seal(bs.Method.CONSTANT, bs.pack_constant(fill_value if has_fill else math.nan))
            return
        lo, hi = float(finite.min()), float(finite.max())
        if lo == hi:
            self.stream = self._seal(bs.Method.CONSTANT, bs.pack_constant(lo))
            return
        self.budget_bytes = math.floor(codec.bpppb * block.size / 8)
        self.fixed_bytes = bs.HEADER_BYTES + (bs.FILL_BYTES if has_fill else 0) + len(self._mask) + bs.CRC_BYTES
        if warn and len(self._mask) > MASK_SHARE_WARNED * self.budget_bytes:
            self.warnings.append((QualityWarning, f"{nan.mean():.1%} of the block's elements are NaN/nodata and "
                                  f"their mask takes {len(self._mask)} of the {self.budget_bytes} budget bytes: little "
                                  "is left for the network, expect a low quality (raise bpppb, or fill the gaps "
                                  "first)"))
        self.cube = np.where(nan, math.nan, cube)
        self._range = lo, hi

    def _seal(self, method: bs.Method, payload: bytes) -> bytes:
        self._header.method = method
        return bs.seal(bs.pack_header(self._header) + self._mask + payload)

    def finish(self, method, payload: bytes | None) -> None:
        """The stream of the method's ``payload``, or of float16 values when it is None."""
        budget_bytes = self.budget_bytes
        if payload is not None:
            self.stream = self._seal(method.CODE, payload)
            why = method.over_budget_reason(self._codec, self._shape)
        else:
            lo, hi = self._range
            offset, scale = lo / 2 + hi / 2, hi / 2 - lo / 2  # halves: no overflow near float64's max
            nan = np.isnan(self.cube)
            normalised = np.where(nan, 0.0, (self.cube - offset) / scale).astype(np.float32)
            self.stream = self._seal(bs.Method.RAW, bs.pack_raw(offset, scale, normalised))
            why = f"a {self._shape} block cannot hold a network within {budget_bytes} bytes; stored as float16 values"
        if self._warn and len(self.stream) > budget_bytes:
            self.warnings.append((BudgetWarning, over_budget_message(len(self.stream), self._size,
                                                                     self._codec.bpppb, why)))
