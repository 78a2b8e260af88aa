"""Decoding a stream: the container, the method's payload, the NaN mask and padding, the dtype.

numpy only: a method's ``decode`` evaluates its network with numpy
(:mod:`xr_inr.methods`); nothing here imports torch, dask, xarray or zarr.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numcodecs.compat import ensure_bytes

from . import stream as bs


class DecodeCounter:
    """How many streams :func:`decode_block` decoded, and how many values it produced.

    Instrumentation for tests and diagnostics (is a read lazy? does a region
    decode only its chunks?): ``blocks`` counts calls (whole chunks and sampled
    ones alike), ``values`` the elements returned. Thread-safe.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.blocks = 0
        self.values = 0

    def add(self, values: int) -> None:
        with self._lock:
            self.blocks += 1
            self.values += values

    def reset(self) -> None:
        with self._lock:
            self.blocks = 0
            self.values = 0


decode_counter = DecodeCounter()
"""Process-wide count of decoded streams (see :class:`DecodeCounter`)."""


def decode_block(buf, ys: np.ndarray | None = None, xs: np.ndarray | None = None) -> np.ndarray:
    """Decode a stream, on its own pixel grid or at chosen positions.

    ``ys``/``xs`` are (fractional) pixel positions along the block's two spatial
    axes (0 ... n - 1 of the chunk); the networks are evaluated there (the grid
    method on its latents interpolated linearly), float16 values and the NaN
    mask are sampled at the nearest pixel. A padded stream (an edge
    chunk) returns its fill value at positions whose nearest pixel is padding.
    The result has the stored axis order and dtype, with the spatial axes of
    length ``len(ys)``/``len(xs)``, in C order.
    """
    from ..methods import BY_CODE

    # a valid stream may hold values that overflow or are NaN: what decodes must not depend on numpy's error state
    with np.errstate(all="ignore"):
        reader = bs.Reader(ensure_bytes(buf))
        header = reader.header
        bands, h, w = header.block_shape
        out_bands, out_h, out_w = _block_layout(header.out_shape, header.band_axis)
        ys = np.arange(out_h, dtype=np.float64) if ys is None else np.asarray(ys, dtype=np.float64).ravel()
        xs = np.arange(out_w, dtype=np.float64) if xs is None else np.asarray(xs, dtype=np.float64).ravel()
        if header.has_fill:  # positions on the padding are not evaluated
            inside_y, inside_x = np.rint(ys) < h, np.rint(xs) < w
            out_ys, out_xs, ys, xs = ys, xs, ys[inside_y], xs[inside_x]
        rows = np.clip(np.rint(ys), 0, h - 1).astype(np.intp)
        cols = np.clip(np.rint(xs), 0, w - 1).astype(np.intp)
        mask = reader.mask()

        if header.method == bs.Method.CONSTANT:
            values = np.full((bands, len(ys), len(xs)), reader.constant())
        elif header.method == bs.Method.RAW:
            offset, scale, normalised = reader.raw()
            normalised = normalised.reshape(bands, h, w)[:, rows][:, :, cols]
            values = offset + scale * normalised.astype(np.float64)
        else:
            values = BY_CODE[header.method].decode(reader.payload(), header.block_shape, ys, xs, header.version)
        reader.finish()

        missing = math.nan if header.fill_value is None else header.fill_value
        if mask is not None:
            values[mask[:, rows][:, :, cols]] = missing
        if header.has_fill:
            full = np.full((out_bands, len(out_ys), len(out_xs)), missing)
            full[np.ix_(np.arange(bands), np.flatnonzero(inside_y), np.flatnonzero(inside_x))] = values
            values = full
        decode_counter.add(values.size)
        # C order: Zarr format 2 reads a compressor's output in memory order
        return np.ascontiguousarray(restore_dtype(np.moveaxis(values, 0, header.band_axis), header.dtype))


class LayoutError(bs.StreamError):
    """A valid stream of another shape or dtype than its place (a Zarr chunk) holds."""


def check_layout(buf, shape, dtype) -> None:
    """Raise :class:`LayoutError` (a :class:`StreamError`) unless the stream decodes to ``shape`` and ``dtype``.

    Reads the header (and checks the checksum) only: callers check a chunk
    against its array before decoding it, so a mismatch is never cropped or cast.
    """
    header = bs.Reader(ensure_bytes(buf)).header
    shape, dtype = tuple(int(n) for n in shape), np.dtype(dtype)
    if header.out_shape != shape or header.dtype != dtype:
        raise LayoutError(f"the stream holds a {header.out_shape} {header.dtype} block, "
                          f"the chunk is {shape} {dtype}")


def check_nbytes(buf, nbytes: int) -> None:
    """Raise :class:`LayoutError` unless the stream decodes to ``nbytes`` bytes (a caller's output
    buffer), from its header alone."""
    header = bs.Reader(ensure_bytes(buf)).header
    size = math.prod(header.out_shape) * header.dtype.itemsize
    if size != nbytes:
        raise LayoutError(f"the stream holds a {header.out_shape} {header.dtype} block ({size} bytes), "
                          f"the output buffer has {nbytes} bytes")


def _block_layout(shape: tuple[int, int, int], band_axis: int) -> tuple[int, int, int]:
    rest = [n for axis, n in enumerate(shape) if axis != band_axis]
    return (shape[band_axis], rest[0], rest[1])


def restore_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float values as ``dtype``: integers rounded to nearest and clipped to the type's range
    (in place: ``values`` is overwritten, and returned when already of ``dtype``)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        np.rint(values, out=values)
        np.clip(values, info.min, info.max, out=values)
    return values.astype(dtype, copy=False)


def inspect(buf) -> dict:
    """What a stream holds: method, shape, dtype, architecture, size and rate (bpppb)."""
    from ..methods import BY_CODE

    data = ensure_bytes(buf)
    reader = bs.Reader(data)
    header = reader.header
    info = {
        "method": header.method.name.lower(),
        "shape": header.out_shape,
        "valid_shape": header.shape,
        "fill_value": header.fill_value,
        "dtype": str(header.dtype),
        "band_axis": header.band_axis,
        "has_nan": header.has_nan,
        "nbytes": len(data),
        "bpppb": 8 * len(data) / math.prod(header.shape),  # over the valid (fitted) elements
    }
    if header.method in BY_CODE:
        reader.mask()
        info.update(BY_CODE[header.method].describe(reader.payload(), header.block_shape, header.version))
    return info


def architecture(info: dict) -> str:
    """The model of a stream in words, from what :func:`inspect` found."""
    if info["method"] == "siren":
        return f"SIREN depth {info['depth']} x width {info['width']}"
    if info["method"] == "grid":
        return (f"latent grids, {info['components']} basis vectors, latent channels per level "
                f"{info['channels']}, synthesis width {info['hidden']}")
    return info["method"]  # constant or raw: no network
