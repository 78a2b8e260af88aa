"""Method "siren": the paper's SIREN, (y, x) -> all bands, float16 weights.

Rezasoltani & Qureshi, "Hyperspectral Image Compression Using Implicit
Neural Representation": sine activations (w0 = 30), SIREN initialisation,
Adam; the architecture (depth, width) is searched per bit budget. The
interface is described in :mod:`xr_inr.methods`.
"""

from __future__ import annotations

import numpy as np

from ...core import stream
from ...core.stream import Method
from . import payload

CODE = Method.SIREN


def encode(cubes: list[np.ndarray], budget_bits: list[int], fixed_bits: list[int], codec) -> list[bytes | None]:
    return [_encode(cube, budget, fixed, codec) for cube, budget, fixed in zip(cubes, budget_bits, fixed_bits, strict=True)]


def _encode(cube: np.ndarray, budget_bits: int, fixed_bits: int, codec) -> bytes | None:
    candidates = payload.candidates(codec, cube.shape[0], budget_bits, fixed_bits)
    if not candidates:
        return None
    largest = max(candidates, key=payload.work_per_pixel)
    if payload.over_work_limit(largest):
        bands, h, w = cube.shape
        raise ValueError(f"a SIREN of depth {largest.depth} and width {largest.width} for {bands} bands x {h} x {w} "
                         f"pixels takes {payload.work_per_pixel(largest) / bands:.0f} multiply-adds "
                         f"per value to decode, more than decoders accept ({stream.MAX_WORK_PER_VALUE}): use "
                         "smaller chunks, a lower bpppb or a smaller fixed width")
    from .fitting import encode  # torch: encoding only

    return encode(cube, candidates, codec)


def decode(data: bytes, block_shape: tuple[int, int, int], ys: np.ndarray, xs: np.ndarray, version: int) -> np.ndarray:
    return payload.decode(data, block_shape, ys, xs)  # the same payload in every version


def describe(data: bytes, block_shape: tuple[int, int, int], version: int) -> dict:
    spec = payload.unpack(data, block_shape)[0]
    return {"depth": spec.depth, "width": spec.width, "n_params": spec.n_params}


def over_budget_reason(codec, shape) -> str:
    return f"the fixed depth={codec.depth}, width={codec.width} is too large for a {shape} block"
