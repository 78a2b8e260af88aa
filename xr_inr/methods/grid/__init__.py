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


def encode(cube: np.ndarray, budget_bits: int, fixed_bits: int, codec) -> bytes | None:
    smallest = payload.estimated_param_bits(payload.choose_spec(*cube.shape, 0.0, codec.components))
    fixed_bits += 8 * AFFINE.size
    if smallest + fixed_bits >= 16 * np.count_nonzero(~np.isnan(cube)):
        return None  # float16 values take less
    from .fitting import encode  # torch: encoding only

    return encode(cube, budget_bits, fixed_bits, codec)


def decode(data: bytes, block_shape: tuple[int, int, int], ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    return payload.decode(data, block_shape, ys, xs)


def describe(data: bytes, block_shape: tuple[int, int, int]) -> dict:
    described = payload.describe(data, block_shape)
    spec = described.pop("spec")
    return {"components": spec.components, "channels": spec.channels, "hidden": spec.hidden,
            "arm_hidden": spec.arm_hidden, **described}


def over_budget_reason(codec, shape) -> str:
    return f"a {shape} block is too small for this rate"
