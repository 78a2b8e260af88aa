"""The network methods, one sub-package each, with the same files:

* ``model.py``   the network's shape and its numpy evaluation;
* ``payload.py`` the payload's bytes: packing them, and reading them back
  into a model with numpy alone (the decoder);
* ``fitting.py`` fitting the network to a block with torch, and the encoder
  built on it (the only modules that import torch).

Each package's ``__init__`` gives the codec core (:mod:`xr_inr.core`) the same
small interface:

* ``CODE``: the method's :class:`~xr_inr.core.stream.Method` code in the header;
* ``encode(cubes, budget_bits, fixed_bits, codec) -> list[bytes | None]``: the
  payloads of (bands, h, w) float64 blocks, NaN where an element is left out
  (None: no network fits the budget; the core stores float16 values); a method
  may fit the blocks together ("grid" fits those of one architecture as one
  batch, on a GPU in one pass);
* ``decode(payload, block_shape, ys, xs, version) -> ndarray``: (bands, len(ys), len(xs))
  float64 values at (fractional) pixel positions, from a stream of format ``version``;
* ``describe(payload, block_shape, version) -> dict``: the architecture, for ``inspect``;
* ``over_budget_reason(codec, shape) -> str``: why a stream can exceed its budget.

A new method is a new sub-package with these files and functions, a new
``Method`` code, and an entry in the tables below.
"""

from ..core.stream import Method
from . import grid, siren

BY_NAME = {"grid": grid, "siren": siren}
BY_CODE = {Method.GRID: grid, Method.SIREN: siren}
