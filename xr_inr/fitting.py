"""Fitting a SIREN to one block with torch (the encoder side).

The paper's method: SIREN initialisation, Adam (lr 2e-4 by default), the
best-PSNR weights seen during training are kept, and the architecture is
chosen per bit budget by brief fits of every candidate (depth, width).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .model import SirenSpec, axis_coords, grid


def pick_device(device: str | None = None) -> torch.device:
    """The requested device, else CUDA when available, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Siren(torch.nn.Module):
    """Torch twin of :func:`xr_inr.model.evaluate`, with SIREN initialisation."""

    def __init__(self, spec: SirenSpec, generator: torch.Generator):
        super().__init__()
        self.spec = spec
        self.linears = torch.nn.ModuleList(
            torch.nn.Linear(in_f, out_f) for out_f, in_f in spec.layer_shapes()
        )
        with torch.no_grad():
            for index, layer in enumerate(self.linears):
                in_f = layer.in_features
                if index == 0:
                    bound = 1.0 / in_f
                else:
                    bound = math.sqrt(6.0 / in_f) / spec.w0
                layer.weight.uniform_(-bound, bound, generator=generator)
                # Biases as torch.nn.Linear initialises them: U(-1/sqrt(in), 1/sqrt(in)).
                layer.bias.uniform_(-1 / math.sqrt(in_f), 1 / math.sqrt(in_f), generator=generator)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        h = coords
        for layer in self.linears[:-1]:
            h = torch.sin(self.spec.w0 * layer(h))
        return self.linears[-1](h)

    def layers_numpy(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [
            (layer.weight.detach().cpu().numpy().copy(), layer.bias.detach().cpu().numpy().copy())
            for layer in self.linears
        ]


@dataclass
class FitResult:
    spec: SirenSpec
    layers: list[tuple[np.ndarray, np.ndarray]]
    mse: float
    """Best mean squared error on the normalised block (values in [-1, 1])."""

    @property
    def psnr(self) -> float:
        """PSNR of the kept weights in the normalised domain (range 2)."""
        return 10 * math.log10(4.0 / max(self.mse, 1e-20))


def fit(
    target: np.ndarray,
    valid: np.ndarray | None,
    spec: SirenSpec,
    steps: int,
    lr: float = 2e-4,
    batch_size: int | None = None,
    seed: int = 0,
    device: str | None = None,
) -> FitResult:
    """Fit ``spec`` to ``target`` (bands, h, w), normalised to [-1, 1].

    ``valid`` masks the elements that count in the loss (NaN pixels left out).
    Full-batch when ``batch_size`` is None, else random pixel batches with a
    full evaluation after every pass over the pixels.
    """
    dev = pick_device(device)
    generator = torch.Generator().manual_seed(seed)
    bands, h, w = target.shape
    coords = torch.from_numpy(grid(axis_coords(h), axis_coords(w))).to(dev)
    values = torch.from_numpy(np.ascontiguousarray(target.reshape(bands, -1).T, dtype=np.float32)).to(dev)
    weights = None
    if valid is not None:
        weights = torch.from_numpy(np.ascontiguousarray(valid.reshape(bands, -1).T)).to(dev, torch.float32)
        values = torch.where(weights > 0, values, torch.zeros_like(values))

    def mse(pred: torch.Tensor, rows: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        err = (pred - values[rows]) ** 2
        if weights is None:
            return err.mean()
        return (err * weights[rows]).sum() / max(float(weights[rows].sum().item()), 1.0)

    model = Siren(spec, generator).to(dev)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    best_mse, best_state = math.inf, None
    n_pixels = coords.shape[0]
    full_batch = batch_size is None or batch_size >= n_pixels
    steps_per_pass = 1 if full_batch else math.ceil(n_pixels / batch_size)

    def keep_if_best(loss_value: float):
        nonlocal best_mse, best_state
        if loss_value < best_mse:
            best_mse = loss_value
            best_state = [p.detach().clone() for p in model.parameters()]

    for step in range(steps):
        if full_batch:
            loss = mse(model(coords))
            keep_if_best(loss.item())  # loss of the weights before this update
        else:
            rows = torch.randint(0, n_pixels, (batch_size,), generator=generator).to(dev)
            loss = mse(model(coords[rows]), rows)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if not full_batch and (step + 1) % steps_per_pass == 0:
            with torch.no_grad():
                keep_if_best(mse(model(coords)).item())
    with torch.no_grad():
        keep_if_best(mse(model(coords)).item())
        for param, kept in zip(model.parameters(), best_state, strict=True):
            param.copy_(kept)
    return FitResult(spec, model.layers_numpy(), best_mse)


def search_and_fit(
    target: np.ndarray,
    valid: np.ndarray | None,
    candidates: list[SirenSpec],
    steps: int,
    search_steps: int,
    **fit_options,
) -> FitResult:
    """The paper's stage 2: brief fits of every candidate, then the best one trained fully."""
    if len(candidates) == 1 or search_steps <= 0:
        best = candidates[0] if len(candidates) == 1 else max(candidates, key=lambda s: s.n_params)
    else:
        trials = [fit(target, valid, spec, search_steps, **fit_options) for spec in candidates]
        best = min(trials, key=lambda r: r.mse).spec
    return fit(target, valid, best, steps, **fit_options)
