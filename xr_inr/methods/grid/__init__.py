"""Method "grid" (the default): integer latent grids, a learned spectral basis
and a synthesis MLP, entropy coded under an autoregressive model.

``model.py`` holds the model and its numpy decoding, ``payload.py`` the
architecture choice, parameter quantisation and bytes, ``fitting.py`` the
rate-distortion training (torch) and the encoder. docs/method.md says what
each part buys. The interface is described in :mod:`xr_inr.methods`.
"""

from __future__ import annotations

import numpy as np

from ...core.stream import AFFINE, Method
from . import payload

CODE = Method.GRID


def encode(cubes: list[np.ndarray], budget_bits: list[int], fixed_bits: list[int], codec) -> list[bytes | None]:
    fixed_bits = [bits + 8 * AFFINE.size for bits in fixed_bits]
    fitted = [i for i, cube in enumerate(cubes) if _network_fits(cube, budget_bits[i], fixed_bits[i], codec)]
    payloads: list[bytes | None] = [None] * len(cubes)  # None: float16 values take less
    if fitted:
        from .fitting import encode  # torch: encoding only

        chosen = encode([cubes[i] for i in fitted], [budget_bits[i] for i in fitted],
                        [fixed_bits[i] for i in fitted], codec)
        for i, payload in zip(fitted, chosen, strict=True):
            payloads[i] = payload
    return payloads


def _network_fits(cube: np.ndarray, budget_bits: int, fixed_bits: int, codec) -> bool:
    """Whether the smallest model takes fewer bits than the block's valid values as float16."""
    smallest = payload.estimated_param_bits(payload.choose_spec(*cube.shape, 0.0, codec.components))
    return smallest + fixed_bits < 16 * np.count_nonzero(~np.isnan(cube))


def decode(data: bytes, block_shape: tuple[int, int, int], ys: np.ndarray, xs: np.ndarray, version: int) -> np.ndarray:
    return payload.decode(data, block_shape, ys, xs, version)


def describe(data: bytes, block_shape: tuple[int, int, int], version: int) -> dict:
    described = payload.describe(data, block_shape, version)
    spec = described.pop("spec")
    return {"components": spec.components, "channels": spec.channels, "hidden": spec.hidden,
            "arm_hidden": spec.arm_hidden, "filtered": spec.filtered, "pulled": spec.pulled, **described}


def over_budget_reason(codec, shape) -> str:
    return f"a {shape} block is too small for this rate"
