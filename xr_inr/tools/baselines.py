"""Classical baseline codecs for (band, y, x) cubes, each encoding at a target rate.

Every codec writes one self-contained byte string: a common 17-byte header
(magic, codec id, dtype, shape) followed by the codec's own fields and
payloads, so ``len(data)`` is everything a decoder needs and
bpppb = 8 * len(data) / cube.size. Each codec searches its own quality knob
for the largest stream that fits the budget and raises ``TargetUnreachable``
when even its coarsest setting does not fit.

NaN elements are filled with their band's mean before coding; the decoded
cube does not restore them (the metrics ignore them).
"""

from __future__ import annotations

import lzma
import math
import struct
from dataclasses import dataclass, field
from typing import Callable

import imagecodecs
import numpy as np
from scipy import fft

from ..core.decode import restore_dtype
from ..core.stream import ByteCursor
from ..pca import pca

__all__ = [
    "BASELINES",
    "Baseline",
    "EncodedResult",
    "TargetUnreachable",
    "decode",
]

_MAGIC = b"XRB"
_HEADER = struct.Struct("<3sBB3I")
_DTYPES = [np.dtype(name) for name in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")]


class TargetUnreachable(ValueError):
    """The codec's smallest stream is larger than the target budget."""

    def __init__(self, codec: str, target_bpppb: float, min_bpppb: float):
        super().__init__(
            f"{codec}: target {target_bpppb:g} bpppb unreachable, smallest stream is {min_bpppb:.4g} bpppb"
        )
        self.codec = codec
        self.target_bpppb = target_bpppb
        self.min_bpppb = min_bpppb


@dataclass
class EncodedResult:
    """One encoded cube: the full byte stream and the knob values that produced it."""

    codec: str
    data: bytes
    shape: tuple[int, int, int]
    target_bpppb: float
    params: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return len(self.data)

    @property
    def bpppb(self) -> float:
        return 8 * len(self.data) / math.prod(self.shape)


# --------------------------------------------------------------------------- byte helpers


def _read_chunks(reader: ByteCursor, count: int) -> list[bytes]:
    """The payloads :func:`_chunks` wrote."""
    return [reader.take(int(length)) for length in reader.array("<u4", count)]


def _chunks(payloads: list[bytes]) -> bytes:
    """uint32 lengths, then the payloads."""
    return np.array([len(p) for p in payloads], "<u4").tobytes() + b"".join(payloads)


def _header(codec_id: int, cube: np.ndarray) -> bytes:
    return _HEADER.pack(_MAGIC, codec_id, _DTYPES.index(cube.dtype), *cube.shape)


def _read_header(data: bytes) -> tuple[int, np.dtype, tuple[int, int, int], ByteCursor]:
    magic, codec_id, dtype_code, *shape = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise ValueError("not an xr-inr baseline stream")
    return codec_id, _DTYPES[dtype_code], tuple(shape), ByteCursor(bytes(data), _HEADER.size, ValueError)


def _working_copy(cube: np.ndarray) -> np.ndarray:
    """float64 copy with NaN replaced by the band mean (0 for an all-NaN band)."""
    cube = np.asarray(cube)
    if cube.ndim != 3:
        raise ValueError(f"expected a (band, y, x) cube, got shape {cube.shape}")
    if cube.dtype not in _DTYPES:
        raise TypeError(f"unsupported dtype {cube.dtype}")
    work = cube.astype(np.float64)
    missing = np.isnan(work)
    if missing.any():
        counts = (~missing).sum(axis=(1, 2))
        means = np.where(counts > 0, np.nansum(work, axis=(1, 2)) / np.maximum(counts, 1), 0.0)
        work = np.where(missing, means[:, None, None], work)
    return work


def _scale_to_uint(values: np.ndarray, low: float, high: float, bits: int) -> np.ndarray:
    top = 2**bits - 1
    span = high - low
    scaled = (values - low) / span * top if span > 0 else np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, top).astype(np.uint16 if bits > 8 else np.uint8)


def _unscale(values: np.ndarray, low: float, high: float, bits: int) -> np.ndarray:
    return low + values.astype(np.float64) / (2**bits - 1) * (high - low)


def _search(
    encode: Callable[[float], bytes],
    low: float,
    high: float,
    budget: int,
    *,
    integer: bool,
    steps: int = 14,
    error: Callable[[bytes], float] | None = None,
) -> tuple[float, bytes]:
    """Knob value in [low, high] and its stream, the best that fits ``budget`` bytes.

    Bisection, taking the stream size to grow with the knob. Among the streams
    seen within budget it keeps the largest, or, when ``error`` is given (for
    codecs whose quality is not monotone in size), the one of lowest error.
    Raises ``_TooBig`` when even ``encode(low)`` is over budget.
    """
    smallest = encode(low)
    if len(smallest) > budget:
        raise _TooBig(len(smallest))
    fitting = [(low, smallest)]
    largest = encode(high)
    if len(largest) <= budget:
        fitting.append((high, largest))
    else:
        for _ in range(steps):
            if integer and high - low <= 1:
                break
            knob = (low + high) // 2 if integer else (low + high) / 2
            stream = encode(knob)
            if len(stream) <= budget:
                low = knob
                fitting.append((knob, stream))
            else:
                high = knob
    if error is None:
        return max(fitting, key=lambda candidate: len(candidate[1]))
    return min(fitting, key=lambda candidate: error(candidate[1]))


class _TooBig(Exception):
    """The smallest stream a codec can write (``nbytes``) is over budget."""

    def __init__(self, nbytes: int):
        super().__init__(nbytes)
        self.nbytes = nbytes


# --------------------------------------------------------------------------- codecs


class Baseline:
    """A baseline codec: ``encode_at_rate`` and ``decode``."""

    name: str
    codec_id: int

    def encode_at_rate(self, cube: np.ndarray, target_bpppb: float) -> EncodedResult:
        """The best stream the codec's knob search finds at or under ``target_bpppb``."""
        cube = np.asarray(cube)
        budget = int(target_bpppb * cube.size // 8)
        try:
            data, params = self._encode_within(cube, budget)
        except _TooBig as error:
            raise TargetUnreachable(self.name, target_bpppb, 8 * error.nbytes / cube.size) from None
        return EncodedResult(self.name, data, tuple(cube.shape), target_bpppb, params)

    def decode(self, data: bytes) -> np.ndarray:
        """The decoded cube, in the original shape and dtype."""
        codec_id, dtype, shape, reader = _read_header(data)
        if codec_id != self.codec_id:
            raise ValueError(f"stream is for codec id {codec_id}, not {self.name}")
        return restore_dtype(self._decode_body(reader, shape, dtype), dtype)

    def _encode_within(self, cube: np.ndarray, budget: int) -> tuple[bytes, dict]:
        raise NotImplementedError

    def _decode_body(self, reader: ByteCursor, shape: tuple[int, int, int], dtype: np.dtype) -> np.ndarray:
        raise NotImplementedError


class JpegPerBand(Baseline):
    """Baseline JPEG (libjpeg-turbo, optimised Huffman tables) on each band, 8 bit.

    Each band is scaled to 0..255 by its own min/max, stored as float32.
    Knob: the JPEG quality 1..100, shared by all bands.
    """

    name = "jpeg"
    codec_id = 1

    def _encode_within(self, cube, budget):
        work = _working_copy(cube)
        lows = work.min(axis=(1, 2)).astype(np.float32)
        highs = work.max(axis=(1, 2)).astype(np.float32)
        images = [_scale_to_uint(band, lo, hi, 8) for band, lo, hi in zip(work, lows, highs)]
        prefix = _header(self.codec_id, cube) + lows.tobytes() + highs.tobytes()

        def encode(quality):
            streams = [imagecodecs.jpeg8_encode(image, level=int(quality), optimize=True) for image in images]
            return prefix + _chunks(streams)

        quality, data = _search(encode, 1, 100, budget, integer=True)
        return data, {"quality": int(quality)}

    def _decode_body(self, reader, shape, dtype):
        lows = reader.array("<f4", shape[0])
        highs = reader.array("<f4", shape[0])
        streams = _read_chunks(reader, shape[0])
        return np.stack(
            [_unscale(imagecodecs.jpeg8_decode(s), lo, hi, 8) for s, lo, hi in zip(streams, lows, highs)]
        )


def _jpeg2k(image: np.ndarray, level: float) -> bytes:
    """Raw J2K codestream (no JP2 box), OpenJPEG's PSNR target ``level`` in dB."""
    return imagecodecs.jpeg2k_encode(image, level=level, codecformat="J2K", numthreads=1)


class Jpeg2000PerBand(Baseline):
    """JPEG 2000 (OpenJPEG) on each band, 16 bit.

    The cube is scaled to 0..65535 with its global min/max (two float64), so
    the shared knob -- OpenJPEG's PSNR target in dB -- asks the same mean
    squared error of every band. Each band is its own J2K codestream.
    """

    name = "jpeg2000"
    codec_id = 2

    def _encode_within(self, cube, budget):
        work = _working_copy(cube)
        low, high = float(work.min()), float(work.max())
        images = _scale_to_uint(work, low, high, 16)
        prefix = _header(self.codec_id, cube) + struct.pack("<2d", low, high)

        def encode(level):
            return prefix + _chunks([_jpeg2k(image, level) for image in images])

        level, data = _search(encode, 1.0, 120.0, budget, integer=False)
        return data, {"level_db": round(level, 3)}

    def _decode_body(self, reader, shape, dtype):
        low, high = reader.unpack("<2d")
        streams = _read_chunks(reader, shape[0])
        return np.stack([_unscale(imagecodecs.jpeg2k_decode(s), low, high, 16) for s in streams])


def _stored_pca(mean: np.ndarray, axes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and first k axes as they are stored: float16."""
    return mean.astype(np.float16), axes[:k].astype(np.float16)


def _project(work: np.ndarray, mean16: np.ndarray, basis16: np.ndarray) -> np.ndarray:
    """Least-squares component images (k, y, x) for the stored (float16) basis."""
    pixels = work.reshape(work.shape[0], -1) - mean16.astype(np.float64)[:, None]
    coefficients = np.linalg.pinv(basis16.astype(np.float64).T) @ pixels
    return coefficients.reshape(basis16.shape[0], *work.shape[1:])


def _reconstruct(mean16: np.ndarray, basis16: np.ndarray, components: np.ndarray) -> np.ndarray:
    k, height, width = components.shape
    pixels = basis16.astype(np.float64).T @ components.reshape(k, -1) + mean16.astype(np.float64)[:, None]
    return pixels.reshape(-1, height, width)


def _mse(work: np.ndarray, decoded: np.ndarray) -> float:
    return float(np.mean(np.square(work - decoded)))


def _component_counts(n_bands: int) -> list[int]:
    return [k for k in (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32) if k <= n_bands]


class _PcaBaseline(Baseline):
    """Shared search: for each component count k, fit the budget; keep the lowest MSE.

    k runs up through 1, 2, 3, 4, 5, 6, 8, 10, ..., 32 and stops after two
    counts in a row that do not improve on the best so far.
    """

    def _encode_within(self, cube, budget):
        work = _working_copy(cube)
        mean, axes = pca(work.reshape(work.shape[0], -1).T, work.shape[0])
        best = None
        misses = 0
        smallest = math.inf
        for k in _component_counts(work.shape[0]):
            if misses == 2:
                break
            mean16, basis16 = _stored_pca(mean, axes, k)
            prefix = _header(self.codec_id, cube) + struct.pack("<H", k) + mean16.tobytes() + basis16.tobytes()
            components = _project(work, mean16, basis16)
            try:
                data, params = self._fit_components(prefix, components, budget)
            except _TooBig as error:
                smallest = min(smallest, error.nbytes)
                continue
            mse = _mse(work, self.decode(data).astype(np.float64))
            if best is None or mse < best[0]:
                best = (mse, data, {"components": k, **params})
                misses = 0
            else:
                misses += 1
        if best is None:
            raise _TooBig(smallest)
        return best[1], best[2]

    def _decode_body(self, reader, shape, dtype):
        (k,) = reader.unpack("<H")
        mean16 = reader.array("<f2", shape[0])
        basis16 = reader.array("<f2", k * shape[0]).reshape(k, shape[0])
        return _reconstruct(mean16, basis16, self._decode_components(reader, k, shape[1:]))

    def _fit_components(self, prefix: bytes, components: np.ndarray, budget: int) -> tuple[bytes, dict]:
        raise NotImplementedError

    def _decode_components(self, reader: ByteCursor, k: int, size: tuple[int, int]) -> np.ndarray:
        raise NotImplementedError


class PcaJpeg2000(_PcaBaseline):
    """PCA over bands (float16 mean and basis), component images coded with JPEG 2000.

    Each component image is scaled to 16 bit and coded as a J2K codestream;
    one OpenJPEG PSNR target (dB) is shared by all components. Searched: the
    number of components k and that target.

    ``shared_scale=False`` ("pca-jpeg2000", the recipe of the project notes):
    each component is scaled by its own min/max (2k float32), so the shared
    target gives every component the same error relative to its own range.
    ``shared_scale=True`` ("pca-jpeg2000-shared"): one min/max for all
    components (2 float32), so the shared target asks the same absolute mean
    squared error of each -- the equal-distortion (reverse water-filling)
    allocation, which spends no bits on components below that error.
    """

    def __init__(self, shared_scale: bool):
        self.shared_scale = shared_scale
        self.name = "pca-jpeg2000-shared" if shared_scale else "pca-jpeg2000"
        self.codec_id = 7 if shared_scale else 3

    def _ranges(self, components: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.shared_scale:
            return components.min(keepdims=True).ravel(), components.max(keepdims=True).ravel()
        return components.min(axis=(1, 2)), components.max(axis=(1, 2))

    def _fit_components(self, prefix, components, budget):
        lows, highs = (values.astype(np.float32) for values in self._ranges(components))
        prefix += lows.tobytes() + highs.tobytes()
        k = len(components)
        ranges = zip(np.broadcast_to(lows, k), np.broadcast_to(highs, k))
        images = [_scale_to_uint(c, lo, hi, 16) for c, (lo, hi) in zip(components, ranges)]

        def encode(level):
            return prefix + _chunks([_jpeg2k(image, level) for image in images])

        level, data = _search(encode, 1.0, 120.0, budget, integer=False, steps=12)
        return data, {"level_db": round(level, 3)}

    def _decode_components(self, reader, k, size):
        n_ranges = 1 if self.shared_scale else k
        lows = reader.array("<f4", n_ranges)
        highs = reader.array("<f4", n_ranges)
        streams = _read_chunks(reader, k)
        triples = zip(streams, np.broadcast_to(lows, k), np.broadcast_to(highs, k))
        return np.stack([_unscale(imagecodecs.jpeg2k_decode(s), lo, hi, 16) for s, lo, hi in triples])


def _diagonal_order(height: int, width: int) -> np.ndarray:
    """Flat indices of a (height, width) grid by increasing u + v (low frequencies first)."""
    u, v = np.indices((height, width))
    return np.lexsort((u.ravel(), (u + v).ravel()))


_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6}]


def _entropy_code(symbols: np.ndarray) -> bytes:
    """Non-negative integers -> 1 byte (symbol width) + raw LZMA2 stream of their byte planes.

    Symbols are written as 1, 2 or 4-byte little-endian integers, all low bytes
    first, then the next bytes (byte planes compress better than interleaved).
    """
    width = 1 if symbols.max(initial=0) < 2**8 else 2 if symbols.max() < 2**16 else 4
    planes = symbols.astype(f"<u{width}").view(np.uint8).reshape(-1, width).T
    return struct.pack("<B", width) + lzma.compress(planes.tobytes(), lzma.FORMAT_RAW, filters=_LZMA_FILTERS)


def _entropy_decode(data: bytes, count: int) -> np.ndarray:
    (width,) = struct.unpack_from("<B", data)
    raw = lzma.decompress(data[1:], lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    planes = np.frombuffer(raw, np.uint8, count * width).reshape(width, count)
    return np.ascontiguousarray(planes.T).view(f"<u{width}").ravel().astype(np.int64)


class PcaDct(_PcaBaseline):
    """PCA over bands (float16 mean and basis), 2-D DCT of each component image.

    The orthonormal DCT-II coefficients of all components are quantised with
    one uniform step (float32), sign-folded (zigzag: 0, -1, 1, -2...), laid out
    low frequencies first per component, and entropy coded with LZMA2 (raw,
    preset 6) over byte planes. No hand-written entropy coder.
    Searched: the number of components k and the step.
    """

    name = "pca-dct"
    codec_id = 4

    def _fit_components(self, prefix, components, budget):
        k, height, width = components.shape
        coefficients = fft.dctn(components, type=2, axes=(1, 2), norm="ortho").reshape(k, -1)
        coefficients = coefficients[:, _diagonal_order(height, width)].ravel()
        spread = float(np.abs(coefficients).max()) or 1.0

        def encode(log_inverse_step):
            step = np.float32(spread / 2.0**log_inverse_step)
            quantised = np.rint(coefficients / step).astype(np.int64)
            folded = np.where(quantised >= 0, 2 * quantised, -2 * quantised - 1)
            return prefix + struct.pack("<f", step) + _entropy_code(folded)

        # Step from the largest coefficient (a handful of symbols) down to 2^-24 of it.
        log_inverse_step, data = _search(encode, 0.0, 24.0, budget, integer=False, steps=12)
        step = float(np.float32(spread / 2.0**log_inverse_step))
        return data, {"step": step}

    def _decode_components(self, reader, k, size):
        height, width = size
        (step,) = reader.unpack("<f")
        folded = _entropy_decode(reader.rest(), k * height * width)
        quantised = np.where(folded % 2 == 0, folded // 2, -(folded + 1) // 2)
        coefficients = np.empty((k, height * width))
        coefficients[:, _diagonal_order(height, width)] = quantised.reshape(k, -1) * np.float64(step)
        return fft.idctn(coefficients.reshape(k, height, width), type=2, axes=(1, 2), norm="ortho")


def _float_for(dtype: np.dtype) -> np.dtype:
    """float32 holds 8/16-bit integers and float32 exactly; wider types go to float64."""
    return np.dtype(np.float32) if dtype.itemsize <= 2 or dtype == np.float32 else np.dtype(np.float64)


class ZfpFixedRate(Baseline):
    """ZFP in fixed-rate mode on the 3-D cube (float32, or float64 for wide types).

    Knob: the rate in bits per value. ZFP's own header (shape, mode) is kept in
    the stream; fixed rate cannot go below about 0.14 bpppb on 3-D data.
    """

    name = "zfp"
    codec_id = 5

    def _encode_within(self, cube, budget):
        work = _working_copy(cube).astype(_float_for(cube.dtype))
        prefix = _header(self.codec_id, cube)

        def encode(rate):
            return prefix + imagecodecs.zfp_encode(work, level=rate, mode=imagecodecs.ZFP.MODE.FIXED_RATE)

        rate, data = _search(encode, 1 / 64, 32.0, budget, integer=False)
        return data, {"rate_bits": round(rate, 4)}

    def _decode_body(self, reader, shape, dtype):
        return imagecodecs.zfp_decode(reader.rest()).astype(np.float64)


class Sz3AbsoluteError(Baseline):
    """SZ3 with an absolute error bound on the 3-D cube (float32, or float64 for wide types).

    Knob: the error bound, searched on a log scale between 1e-7 and 1 times the
    cube's value range. SZ3's stream lacks shape and dtype: the header has them.
    """

    name = "sz3"
    codec_id = 6

    def _encode_within(self, cube, budget):
        work = _working_copy(cube).astype(_float_for(cube.dtype))
        span = float(work.max() - work.min()) or 1.0
        prefix = _header(self.codec_id, cube)

        def encode(log_precision):
            bound = span * 10.0 ** (-log_precision)
            return prefix + imagecodecs.sz3_encode(work, mode=imagecodecs.SZ3.MODE.ABS, abs=bound)

        def error(stream):
            return _mse(work, self.decode(stream))

        # SZ3's error at low rates is not monotone in its bound: keep the lowest error seen.
        log_precision, data = _search(encode, 0.0, 7.0, budget, integer=False, steps=14, error=error)
        return data, {"abs_error_bound": span * 10.0 ** (-log_precision)}

    def _decode_body(self, reader, shape, dtype):
        stream = reader.rest()
        return imagecodecs.sz3_decode(stream, shape, _float_for(dtype)).astype(np.float64)


BASELINES: dict[str, Baseline] = {
    codec.name: codec
    for codec in (
        JpegPerBand(),
        Jpeg2000PerBand(),
        PcaDct(),
        PcaJpeg2000(shared_scale=False),
        PcaJpeg2000(shared_scale=True),
        ZfpFixedRate(),
        Sz3AbsoluteError(),
    )
}


def decode(data: bytes) -> np.ndarray:
    """Decode any baseline stream, dispatching on the codec id in its header."""
    codec_id = _read_header(data)[0]
    for codec in BASELINES.values():
        if codec.codec_id == codec_id:
            return codec.decode(data)
    raise ValueError(f"unknown baseline codec id {codec_id}")
