"""Method "siren": the payload's bytes, and the architectures a budget allows.

Payload layout (little-endian), after the stream header::

    depth (u8), width (u16), w0 (f32), offset, scale (2 x f64)
    parameters   float16, in :func:`~xr_inr.methods.siren.model.flatten_params` order

The network predicts values normalised to [-1, 1]; ``offset + scale * value``
is the block's value. Decoding needs numpy only; its work is bounded by
``MAX_WORK_PER_VALUE`` (:func:`work_per_pixel`).
"""

from __future__ import annotations

import struct

import numpy as np

from ...core import stream
from ...core.stream import ByteCursor, StreamError
from .model import SirenSpec, coordinate_mesh, evaluate, flatten_params, largest_width, pixel_coords, unflatten_params

HEAD = struct.Struct("<BHfdd")
SINE_WORK = 32
"""A hidden value's sine (and its layer's other elementwise steps), counted as this many
multiply-adds: 9-45 ns measured against 0.03-0.3 ns per multiply-add (reference machine)."""


def pack(spec: SirenSpec, offset: float, scale: float, layers: list[tuple[np.ndarray, np.ndarray]]) -> bytes:
    head = HEAD.pack(spec.depth, spec.width, spec.w0, offset, scale)
    return head + flatten_params(spec, layers).astype("<f2").tobytes()


def unpack(data: bytes, block_shape: tuple[int, int, int]):
    """(spec, offset, scale, layers) of a payload."""
    cursor = ByteCursor(data, 0, StreamError, "xr-inr stream ends before its payload does")
    depth, width, w0, offset, scale = cursor.unpack(HEAD)
    try:
        spec = SirenSpec(depth, width, block_shape[0], w0)
    except ValueError as exc:
        raise StreamError(str(exc)) from None
    if over_work_limit(spec):
        pixels = block_shape[1] * block_shape[2]
        raise StreamError(f"the SIREN declares {work_per_pixel(spec) * pixels} multiply-adds of decoding, more "
                          f"than the decoder's limit of {stream.MAX_WORK_PER_VALUE * spec.bands * pixels} "
                          f"({stream.MAX_WORK_PER_VALUE} per value)")
    flat = np.frombuffer(cursor.take(2 * spec.n_params), dtype="<f2")
    if cursor.remaining:
        raise StreamError(f"{cursor.remaining} unexpected bytes after the payload")
    return spec, offset, scale, unflatten_params(spec, flat)


def work_per_pixel(spec: SirenSpec) -> int:
    """Multiply-adds of evaluating ``spec`` at one pixel: one per parameter, SINE_WORK per hidden value."""
    return spec.n_params + SINE_WORK * spec.depth * spec.width


def over_work_limit(spec: SirenSpec) -> bool:
    """Whether decoding ``spec`` takes more than ``MAX_WORK_PER_VALUE`` multiply-adds per value."""
    return work_per_pixel(spec) > stream.MAX_WORK_PER_VALUE * spec.bands


def decode(data: bytes, block_shape: tuple[int, int, int], ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Values (bands, len(ys), len(xs)) at pixel positions ``ys`` x ``xs`` (the network is continuous)."""
    bands, h, w = block_shape
    spec, offset, scale, layers = unpack(data, block_shape)
    predicted = evaluate(spec, layers, coordinate_mesh(pixel_coords(ys, h), pixel_coords(xs, w)))
    return offset + scale * predicted.T.reshape(bands, len(ys), len(xs)).astype(np.float64)


def candidates(codec, bands: int, budget_bits: int, fixed_bits: int) -> list[SirenSpec]:
    """Architectures to try: ``codec``'s fixed one, or every (depth, width) whose
    float16 parameters fit the budget."""
    max_params = (budget_bits // 8 - fixed_bits // 8 - HEAD.size) // 2
    if codec.depth is not None and codec.width is not None:
        return [SirenSpec(codec.depth, codec.width, bands)]
    depths = [codec.depth] if codec.depth is not None else range(1, codec.max_depth + 1)
    specs = []
    for depth in depths:
        width = codec.width if codec.width is not None else largest_width(depth, bands, max_params)
        if width >= 1 and SirenSpec(depth, width, bands).n_params <= max_params:
            specs.append(SirenSpec(depth, width, bands))
    return specs
