"""Fitting the latent-grid model (method "grid") to blocks with torch: one block, or a batch of
blocks of the same architecture fitted together (every parameter with a leading dimension over
the blocks; what a GPU runs in one pass).

The loss is rate + distortion: the mean squared error of the normalised block
plus ``lmbda`` times the estimated bits of the latents per value, the bits
being -log2 of each latent's probability under the ARM's discretised Laplace
(the entropy coder's model). ``lmbda`` is steered during training so that the
latents fill the bits left by the budget. Latents are trained with additive
uniform noise, then with straight-through rounding (Ballé et al.; Cool-chic).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ...core.encode import limit_blas
from ...core.products import matmul
from ...core.stream import AFFINE
from ...pca import pca
from ..fitting import Adam, pick_device
from . import arm as lc
from . import scripted
from .model import GridSpec, upsample_matrix
from .payload import ARCHITECTURES, Packed, choose_spec, decode, estimated_param_bits, model_parts, packed
from .rounding import rounded_again

LOG2_SCALES = (-4.0, 13.0)  # the entropy coder's range of log2 Laplace scales
RATE_SAMPLE = 8
"""A training step estimates the latents' bits from every 8th point in coding order (a different
eighth each step, times 8): an unbiased estimate at an eighth of the cost, the rate term having
been three quarters of a step (docs/method.md)."""
RATE_ROWS = 12_000
"""... and from every n-th point, n > 8, where an eighth would be more points than this: the
rate term's cost per step stays bounded as blocks and rates grow (docs/method.md)."""
STEER_ROWS = 50_000
"""Steering lambda (every 10 steps) and re-picking the step read the rounded latents' bits from every
n-th point, n the least that leaves at most this many: to within about 1 %, at a quarter of the cost
in a 100 x 100 x 198 block at 0.2 bpppb (where these passes over every latent were a sixth of an encode)."""
ARM_WARM_UP = (100, 50)
"""Before training, the ARM is fitted alone to the initial latents (these steps, twice) and the
coefficient step re-picked with it after each: an untrained ARM's bits, 3x the static estimate
on ABU urban-2, made the first re-picks overshoot (docs/method.md). A fit of n <
:data:`WARM_UP_FULL_FROM` steps (a test, a preview) warms up for (n / 50)**3 of these."""
WARM_UP_FULL_FROM = 50
"""Fits of at least this many steps (effort "fast" and above) get the whole warm-up."""


@dataclass
class GridFit:
    """A trained model as numpy arrays (float, not yet quantised except the latents)."""

    spec: GridSpec
    step: float
    """Quantisation step of the coefficient images (normalised units)."""
    latents: list[np.ndarray]
    """Integer-valued latent grids, (channels, gh, gw) per level."""
    synthesis: list[tuple[np.ndarray, np.ndarray]]
    arm: list[tuple[np.ndarray, np.ndarray]]
    taps: np.ndarray | None
    """The coefficient images' 3 x 3 filters (components, 9), when the spec has them."""
    basis: np.ndarray
    mean: np.ndarray
    coefficient_rms: np.ndarray
    """Root mean square of each predicted coefficient (how much a basis error costs)."""
    mse: float
    latent_bits: float
    """Estimated bits of the rounded latents under the (float) ARM."""


class BlockLinear(torch.nn.Module):
    """The parameters of one linear layer per block of a batch: weight (blocks, out, in), bias (blocks, out),
    applied to (blocks, rows, in) by :mod:`~xr_inr.methods.grid.scripted`. Every block starts from the same
    weights, uniform in +-1/sqrt(in) from ``generator``, and a zero bias."""

    def __init__(self, blocks: int, out_features: int, in_features: int, generator: torch.Generator):
        super().__init__()
        bound = 1 / math.sqrt(in_features)
        weight = torch.empty(out_features, in_features).uniform_(-bound, bound, generator=generator)
        self.weight = torch.nn.Parameter(weight.expand(blocks, -1, -1).clone())
        self.bias = torch.nn.Parameter(torch.zeros(blocks, out_features))


def _linears(shapes, blocks: int, generator) -> torch.nn.ModuleList:
    return torch.nn.ModuleList(BlockLinear(blocks, o, i, generator) for o, i in shapes)


class _OnDevice:
    """Python floats as a tensor like ``like`` (dtype, device), copied again only when they change: a
    copy to a GPU waits for the GPU, so a copy at every training step would keep the host from queueing
    the next step's work while the GPU runs this one."""

    def __init__(self):
        self._key, self._tensor = None, None

    def __call__(self, values: list[float], like: torch.Tensor) -> torch.Tensor:
        key = (tuple(values), like.dtype, like.device)
        if key != self._key:
            self._key, self._tensor = key, torch.tensor(values, dtype=like.dtype, device=like.device)
        return self._tensor


class GridModel(torch.nn.Module):
    """Torch twin of :mod:`xr_inr.methods.grid.model`, for a batch of blocks with the same spec: every
    parameter has a leading dimension over the blocks, and each block's loss reaches its own
    parameters only (a GPU fits them in one pass; on the CPU a batch of one is the usual fit).

    Each block starts as quantised PCA: its coefficient images are its PCA
    coefficients divided by its ``step``, the synthesis MLP's output layer and
    the coefficient images' filters are zero, and the ARM predicts each latent
    as the mean of its 4 nearest context points. The ARM is the float twin of
    :func:`xr_inr.methods.grid.arm.arm_integers` (ReLU, clipped; Mitchell's log2).

    ``steps`` (blocks,), ``means`` (blocks, bands), ``bases`` (blocks, components, bands),
    ``coefficients`` (blocks, pixels, components).
    """

    def __init__(self, spec: GridSpec, steps, means: np.ndarray, bases: np.ndarray, coefficients: np.ndarray,
                 generator: torch.Generator):
        super().__init__()
        blocks = len(steps)
        self.spec = spec
        self.steps = [float(step) for step in steps]
        self._steps_on_device = _OnDevice()
        grids = [torch.zeros(blocks, c, *spec.level_shape(level)) for level, c in enumerate(spec.level_channels())]
        for b, step in enumerate(self.steps):
            grids[0][b, : spec.components] = torch.from_numpy(
                (coefficients[b].T / step).reshape(spec.components, spec.height, spec.width).astype(np.float32))
        self.latents = torch.nn.ParameterList(torch.nn.Parameter(g) for g in grids)
        self.synthesis = _linears(spec.synthesis_shapes(), blocks, generator)
        self.arm = _linears(spec.arm_shapes(), blocks, generator)
        with torch.no_grad():
            if spec.hidden:
                self.synthesis[-1].weight.zero_()
            predictor = self.arm[0].weight
            predictor.zero_()
            predictor[:, 0, :4] = 0.25
            self.arm[-1].weight.zero_()
            self.arm[-1].bias.copy_(torch.tensor([0.0, 1.0]))
        self.taps = torch.nn.Parameter(torch.zeros(blocks, spec.components * spec.filtered, 9))
        self.basis = torch.nn.Parameter(torch.from_numpy(np.asarray(bases, dtype=np.float32)))
        self.mean = torch.nn.Parameter(torch.from_numpy(np.asarray(means, dtype=np.float32)))
        self._register_coding_order(spec)
        for level in range(len(spec.channels)):
            gh, gw = spec.level_shape(level)
            up_y = upsample_matrix(np.arange(spec.height), gh, 2**level)
            up_x = upsample_matrix(np.arange(spec.width), gw, 2**level)
            self.register_buffer(f"up_y{level}", torch.from_numpy(up_y.astype(np.float32)))
            self.register_buffer(f"up_x{level}", torch.from_numpy(up_x.astype(np.float32)))

    @property
    def blocks(self) -> int:
        return len(self.steps)

    def _register_coding_order(self, spec: GridSpec) -> None:
        """Every latent's context, its own index and stride feature, into a block's latents flattened
        level by level (one zero appended): the rate of every level in one pass of the ARM. Rows
        run level by level, channel by channel, in coding order; ``coefficient_rows`` marks those
        of the coefficient images."""
        sizes = [c * math.prod(spec.level_shape(level)) for level, c in enumerate(spec.level_channels())]
        zero, offset = sum(sizes), 0
        contexts, points, strides, coefficient = [], [], [], []
        for level, channels in enumerate(spec.level_channels()):
            n = math.prod(spec.level_shape(level))
            level_points, level_contexts, level_strides = lc.all_contexts(*spec.level_shape(level))
            for channel in range(channels):
                first = offset + channel * n
                contexts.append(np.where(level_contexts == n, zero, level_contexts + first))
                points.append(level_points + first)
                strides.append(level_strides)
                coefficient.append(np.full(level_points.size, level == 0 and channel < spec.components))
            offset += sizes[level]
        # int32: a 256 x 256 block of 20 coefficient images has 16 M context entries
        self.register_buffer("contexts", torch.from_numpy(np.concatenate(contexts).astype(np.int32)))
        self.register_buffer("points", torch.from_numpy(np.concatenate(points).astype(np.int32)))
        self.register_buffer("strides", torch.from_numpy(np.concatenate(strides).astype(np.float32)))
        self.register_buffer("coefficient_rows", torch.from_numpy(np.concatenate(coefficient)))

    @torch.no_grad()
    def retune_steps(self, latent_bits, every: int = 1, start: int = 0) -> None:
        """Re-pick each block's coefficient step so that the ARM's bits meet its ``latent_bits``.

        The ratio of the ARM's bits to the static estimate of the current
        latents is assumed to hold at the new step; the coefficient images are
        rescaled so that the reconstruction does not change. ``every`` > 1: the
        ARM's bits estimated from every ``every``-th latent, as in :meth:`latent_bits`.
        """
        k = self.spec.components
        rounded = [torch.round(z) for z in self.latents]
        rows = slice(start % every, None, every)
        bits = self.row_bits(rounded, rows) * every
        coefficient_rows = self.coefficient_rows[rows]
        for b, step in enumerate(self.steps):
            images = rounded[0][b, :k].cpu().numpy()
            coefficient_bits = bits[b, coefficient_rows].sum().item()
            other_bits = bits[b, ~coefficient_rows].sum().item()
            ratio = coefficient_bits / max(estimate_bits(images), 1.0)
            coefficients = self.latents[0][b, :k].cpu().numpy().reshape(k, -1).T * step
            new_step = choose_step(coefficients, images.shape[1:], max(latent_bits[b] - other_bits, 1.0) / ratio)
            self.latents[0][b, :k] *= step / new_step
            self.arm[-1].bias[b, 1] += math.log2(step / new_step)  # the ARM's scales follow the latents
            self.steps[b] = new_step

    def quantised(self, mode: str, generators: list[torch.Generator] | None = None) -> list[torch.Tensor]:
        """Latents with uniform noise ("noise", each block's drawn from its own generator), rounded
        with straight-through gradients ("round")."""
        latents = list(self.latents)
        if mode == "noise":
            return scripted.noisy(latents, [[torch.rand(z.shape[1:], generator=g, device=z.device, dtype=z.dtype)
                                             for g in generators] for z in latents])
        return scripted.rounded(latents)

    def forward(self, latents: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(blocks, pixels, bands) normalised values and coefficients (blocks, pixels, components)."""
        coefficients = self.coefficients(latents)
        return torch.bmm(coefficients, self.basis) + self.mean[:, None], coefficients

    def coefficients(self, latents: list[torch.Tensor]) -> torch.Tensor:
        """(blocks, pixels, components): the coefficient images times the step, plus the synthesis
        MLP's output."""
        ups = [(getattr(self, f"up_y{level}"), getattr(self, f"up_x{level}")) for level in range(len(latents))]
        return scripted.coefficients(latents, self._steps_on_device(self.steps, latents[0]), self.taps,
                                     [y for y, _ in ups], [x for _, x in ups], *_layers(self.synthesis),
                                     self.spec.components, self.spec.filtered)

    def latent_bits(self, latents: list[torch.Tensor], every: int = 1, start: int = 0) -> torch.Tensor:
        """Estimated bits of each block's latents (a list by level) under the ARM's discretised Laplace.

        ``every`` > 1: an unbiased estimate from every ``every``-th latent (in the order of
        :meth:`_register_coding_order`, from ``start``), times ``every``.
        """
        return self.row_bits(latents, slice(start % every, None, every)).sum(dim=1) * every

    def row_bits(self, latents: list[torch.Tensor], rows: slice = slice(None)) -> torch.Tensor:
        """Estimated bits of each latent of ``rows`` (blocks, rows): one pass of the ARM over every level."""
        return scripted.arm_bits(*self._arm_inputs(latents, rows), self.strides[rows], *self._arm_mlp())

    @torch.no_grad()
    def locations(self, latents: list[torch.Tensor]) -> torch.Tensor:
        """(blocks, latents): the location the ARM gives each latent, in the order of the block's latents
        flattened level by level (what the entropy coder's Laplace is centred on)."""
        _, compressed, prediction = self._arm_inputs(latents, slice(None))
        location, _ = scripted.arm_laplace(compressed, prediction, self.strides, *self._arm_mlp())
        out = torch.empty_like(location)
        out[:, self.points.long()] = location
        return out

    def _arm_inputs(self, latents: list[torch.Tensor], rows: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(values, compressed differences, predictions) of the latents of ``rows``
        (:func:`~xr_inr.methods.grid.scripted.arm_differences`, the differences through
        :func:`_signed_mitchell`)."""
        predictor = self.arm[0]
        values, differences, prediction = scripted.arm_differences(latents, predictor.weight, predictor.bias,
                                                                   self.contexts[rows], self.points[rows])
        return values, _signed_mitchell(differences), prediction

    def _arm_mlp(self) -> tuple:
        """The arguments of :func:`~xr_inr.methods.grid.scripted.arm_laplace` after the strides: the ARM's
        layers after its predictor, and its bounds."""
        _, *layers = self.arm  # unpacked: a slice of a ModuleList builds a new one
        return *_layers(layers), lc.HIDDEN_CAP * 2.0**-lc.FRACTION, *LOG2_SCALES


class _SignedMitchell(torch.autograd.Function):
    """sign(d) log2(1 + |d|) with Mitchell's log2, as :func:`xr_inr.methods.grid.arm._compress`.

    Mitchell's log2 of 1 + |d| = 2**k (1 + f) is k + f: the float32 bit pattern of 1 + |d| less
    127 * 2**23, times 2**-23. Piecewise linear, with gradient 2**-k, also read off the pattern.
    Eager torch between the ARM's compiled parts: TorchScript has no dtype view nor autograd function,
    and ``frexp`` made a step 2-5 % slower (docs/method.md).
    """

    @staticmethod
    def forward(ctx, d: torch.Tensor) -> torch.Tensor:
        pattern = (1.0 + d.abs()).view(torch.int32)  # d is float32, as every parameter
        ctx.save_for_backward(((254 << 23) - (pattern & (255 << 23))).view(torch.float32))  # 2**-k
        return ((pattern - (127 << 23)).float() * 2.0**-23).copysign_(d)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (slope,) = ctx.saved_tensors
        return grad * slope


_signed_mitchell = _SignedMitchell.apply


def _layers(layers) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """([weight, ...], [bias, ...]) of :class:`BlockLinear` layers."""
    return [layer.weight for layer in layers], [layer.bias for layer in layers]


def estimate_bits(images: np.ndarray) -> float:
    """Bits of integer images (n, h, w) coded as the residual of the left/upper mean,
    under one Laplace per image: a static stand-in for the ARM, used to pick the step.

    In closed form: under a Laplace of scale b (the residuals' mean magnitude) discretised to
    unit bins, a residual 0 costs -log2(1 - exp(-1/2b)) bits and a residual r != 0 costs
    |r| / (b ln 2) - log2 sinh(1/2b), each at most 16 (the probability clamped at 2**-16).
    """
    n = images.shape[0]
    padded = np.pad(images.astype(np.float64), ((0, 0), (1, 0), (1, 0)))
    residual = padded[:, 1:, :-1] + padded[:, :-1, 1:]  # magnitudes computed in place: 1.5x faster
    residual *= 0.5
    np.rint(residual, out=residual)
    np.subtract(images, residual, out=residual)
    magnitude = np.abs(residual, out=residual).reshape(n, -1)
    b = np.maximum(magnitude.mean(axis=1), 1e-3)
    half = 0.5 / b
    zero_bits = np.minimum(-np.log2(-np.expm1(-half)), 16.0)
    log2_sinh = half / math.log(2) - 1 + np.log2(-np.expm1(-2 * half))
    bits_per_unit = 1 / (b * math.log(2))
    cap = np.maximum((16 + log2_sinh) / bits_per_unit, 0.5)[:, None]  # residuals from here on cost 16 bits
    zeros = np.count_nonzero(magnitude == 0, axis=1)
    capped = np.count_nonzero(magnitude >= cap, axis=1)
    below_cap = magnitude.sum(axis=1)
    if capped.any():
        below_cap -= np.where(magnitude >= cap, magnitude, 0.0).sum(axis=1)
    middle = magnitude.shape[1] - zeros - capped
    return float((zeros * zero_bits + bits_per_unit * below_cap - middle * log2_sinh + 16.0 * capped).sum())


MAX_LATENT = 2**13
"""The step is never so fine that a coefficient latent exceeds this (the stream format takes latents
below 2**15, :data:`xr_inr.methods.grid.arm.MAX_LATENT`; at very high rates the stream then comes out
under its budget)."""


STEP_PRECISION = 1 + 2**-10
""":func:`choose_step` stops when the step is known to this factor: 0.1 % of the step moves a latent's
bits by about 0.0014 (30 halvings of the bracket, to a factor 1 + 1e-8, took twice as many tries)."""


def choose_step(coefficients: np.ndarray, shape: tuple[int, int], latent_bits: float) -> float:
    """The finest quantisation step of the coefficient images whose estimated bits fit ``latent_bits``
    (no finer than :data:`MAX_LATENT` allows), to within :data:`STEP_PRECISION`."""
    images = coefficients.T.reshape(-1, *shape)
    lo, hi = 1e-6, 1.0  # bisect log(step): 14 tries
    while hi > lo * STEP_PRECISION:
        step = math.sqrt(lo * hi)
        if estimate_bits(np.round(images / step)) > latent_bits:
            lo = step
        else:
            hi = step
    return max(hi, float(np.abs(coefficients).max()) / MAX_LATENT)


class _BestRounded:
    """The parameters of each block of a training in the offered state of least rate-distortion cost
    with rounded latents, MSE + lambda * bits / values at the current lambda: the rounded phase of
    training (straight-through gradients) can raise both the rate and the error (docs/method.md),
    and a block then gets back its best state."""

    def __init__(self, training: GridTraining):
        self._training = training
        self._parameters = list(training.model.parameters())  # each (blocks, ...)
        self._saved = [p.detach().clone() for p in self._parameters]
        self._best: list[tuple[float, float]] | None = None  # (MSE, bits) per block
        self._current = [True] * training.model.blocks

    @torch.no_grad()
    def offer(self) -> None:
        states = list(zip(*self._training.rounded_state(), strict=True))
        best = self._best or states
        lambdas = self._training.lambdas_per_value()
        for b, ((mse, bits), (best_mse, best_bits), lmbda) in enumerate(zip(states, best, lambdas, strict=True)):
            self._current[b] = mse + lmbda * bits <= best_mse + lmbda * best_bits
            if self._current[b]:
                best[b] = (mse, bits)
                for saved, parameter in zip(self._saved, self._parameters, strict=True):
                    saved[b] = parameter[b]
        self._best = best

    @torch.no_grad()
    def restore(self) -> None:
        for b, current in enumerate(self._current):
            if not current:
                for saved, parameter in zip(self._saved, self._parameters, strict=True):
                    parameter[b] = saved[b]


class GridTraining:
    """Latent-grid models being fitted to a batch of blocks of the same spec (one block: the usual
    fit); ``boundary_moves``, ``coarsen`` and ``fine_tune`` trade quality for bits after ``train``.

    ``targets`` are (bands, h, w) in [0, 1]; ``valids`` mask the elements that
    count in the distortion (None: all; NaN left out); ``latent_bits`` is the
    bits each block's latents may take. Each block's coefficient step starts
    from the static estimate times ``step_margin`` (the ARM codes better), is
    re-picked after each warm-up of the ARM (:data:`ARM_WARM_UP`) and three
    times while training. Each block has its own loss, lambda, step and
    noise generator.
    """

    def __init__(self, targets: list[np.ndarray], valids: list[np.ndarray | None], spec: GridSpec,
                 latent_bits: list[float], lr: float = 1e-2, step_margin: float = 1.15, seed: int = 0,
                 device: str | None = None):
        dev = pick_device(device)
        # a generator per block, seeded alike: fits in threads stay reproducible, a block's noise is that of any batch
        self._noise = [torch.Generator(device=dev).manual_seed(seed) for _ in targets]
        self.spec = spec
        self.latent_bits = [max(bits, 1.0) for bits in latent_bits]
        pixels = [pixel_values(target, valid) for target, valid in zip(targets, valids, strict=True)]

        def start(b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
            values = pixels[b][0]
            mean, basis = pca(values, spec.components)
            coefficients = matmul(values - mean, basis.T)
            return mean, basis, coefficients, choose_step(coefficients, (spec.height, spec.width),
                                                          step_margin * self.latent_bits[b])

        started = per_block(start, list(range(len(targets))))
        means, bases, coefficients, steps = ([row[i] for row in started] for i in range(4))
        self.model = GridModel(spec, steps, np.stack(means), np.stack(bases), np.stack(coefficients),
                               torch.Generator().manual_seed(seed)).to(dev)
        self._x = torch.from_numpy(np.stack([values for values, _ in pixels]).astype(np.float32)).to(dev)
        self._weights = None
        if any(weights is not None for _, weights in pixels):
            self._weights = torch.from_numpy(np.stack([np.ones_like(values) if weights is None else weights
                                                       for values, weights in pixels]).astype(np.float32)).to(dev)
        self._n_values = torch.tensor([float(values.size if weights is None else weights.sum())
                                       for values, weights in pixels], device=dev)
        if self._weights is None:  # what _distortion needs of the blocks, less their initial means
            self._centre = torch.from_numpy(np.stack(means).astype(np.float32)).to(dev)
            self._centred = self._x - self._centre[:, None]
            self._centred_squares = self._centred.double().pow(2).sum(dim=(1, 2))
            self._centred_sums = self._centred.double().sum(dim=1)
        spectral = [self.model.basis, self.model.mean]  # small values: a gentler learning rate
        networks = [self.model.taps, *self.model.synthesis.parameters(), *self.model.arm.parameters()]
        groups = [(list(self.model.latents.parameters()), 1.0), (networks, 1.0), (spectral, 0.05)]
        self._rate_every = max(RATE_SAMPLE, math.ceil(self.model.contexts.shape[0] / RATE_ROWS))
        self._steer_every = math.ceil(self.model.contexts.shape[0] / STEER_ROWS)
        self._retunes = 0
        self._lr = lr
        self._optimiser = Adam([{"params": p, "base": f} for p, f in groups], lr=lr)
        with torch.no_grad():  # at high rate, D falls by 2 ln 2 D per bit per value: start there
            start = self._distortion(self.model(self.model.quantised("round"))[0]).tolist()
        self._log_lmbda = [math.log(2 * math.log(2) * max(d, 1e-12)) for d in start]
        self._lmbda_on_device = _OnDevice()

    def _distortion(self, pred: torch.Tensor) -> torch.Tensor:
        """Each block's mean squared error (blocks,) of the values ``pred``."""
        err = (pred - self._x) ** 2
        return err.mean(dim=(1, 2)) if self._weights is None else (err * self._weights).sum(dim=(1, 2)) / self._n_values

    def _training_distortion(self, latents: list[torch.Tensor]) -> torch.Tensor:
        """:meth:`_distortion` of the model with ``latents``; for unmasked blocks from the coefficients
        C (pixels, components) alone, without the (pixels, bands) values (1.7x faster with the
        model's forward and backward at 100 x 100 x 198): with X a block less its initial mean, m the model's mean less
        that, and B the basis, |X - m - C B|^2 = |X - m|^2 - <C, 2 (X - m) B^T - C B B^T>, whose
        large terms are summed in float64 (docs/method.md: the gradient's precision)."""
        model = self.model
        if self._weights is not None:
            return self._distortion(model(latents)[0])
        return scripted.projected_distortion(model.coefficients(latents), model.basis, model.mean, self._centre,
                                             self._centred, self._centred_squares, self._centred_sums,
                                             self._n_values)

    def _step(self, mode: str, lr_scale: float, iteration: int) -> None:
        for group in self._optimiser.param_groups:
            group["lr"] = self._lr * lr_scale * group["base"]
        latents = self.model.quantised(mode, self._noise)
        bits = self.model.latent_bits(latents, self._rate_every, iteration)
        lmbda = self._lmbda_on_device([math.exp(v) for v in self._log_lmbda], bits)
        loss = (self._training_distortion(latents) + lmbda * bits / self._n_values).sum()  # a block's loss reaches only its own parameters
        self._optimiser.zero_grad()
        loss.backward()
        self._optimiser.step()
        if iteration % 10 == 9:  # steer the bits of the rounded latents towards the budget
            with torch.no_grad():
                rounded = self.model.latent_bits([torch.round(z) for z in self.model.latents], self._steer_every,
                                                 iteration // 10).tolist()
            for b, (bits_b, aim) in enumerate(zip(rounded, self.latent_bits, strict=True)):
                self._log_lmbda[b] += float(np.clip(0.5 * math.log(max(bits_b, 1.0) / aim), -0.2, 0.2))

    def _warm_up_arm(self, steps: int) -> None:
        """Fit the ARM alone to the rounded latents (their bits only), then re-pick the steps with it."""
        optimiser = Adam(self.model.arm.parameters(), lr=self._lr)
        rounded = [torch.round(z).detach() for z in self.model.latents]
        for iteration in range(steps):
            loss = (self.model.latent_bits(rounded, self._rate_every, iteration) / self._n_values).sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        self._retune_steps()

    def _retune_steps(self) -> None:
        """Re-pick the steps (:meth:`GridModel.retune_steps`), each time from other sampled latents."""
        self.model.retune_steps(self.latent_bits, self._steer_every, self._retunes)
        self._retunes += 1

    def train(self, steps: int) -> GridTraining:
        """The schedule: the ARM's warm-up (:data:`ARM_WARM_UP`), then 80 % of the steps with
        noisy latents (cosine learning rate), then rounded latents at a tenth of the learning rate."""
        for warm_up in ARM_WARM_UP:
            self._warm_up_arm(math.ceil(warm_up * min(1.0, steps / WARM_UP_FULL_FROM) ** 3))
        noise_steps = int(0.8 * steps)
        retune_at = {int(0.1 * steps), int(0.25 * steps), int(0.4 * steps)}
        best = _BestRounded(self)
        for iteration in range(steps):
            if iteration in retune_at:  # the ARM codes better than the static estimate: re-pick the step
                self._retune_steps()
            if iteration < noise_steps:
                mode, progress, top = "noise", iteration / noise_steps, 1.0
            else:
                mode, progress, top = "round", (iteration - noise_steps) / max(steps - noise_steps, 1), 0.1
            self._step(mode, top * 0.5 * (1 + math.cos(math.pi * progress)) + 1e-3, iteration)
            if iteration >= noise_steps - 1 and (iteration % 10 == 9 or iteration in (noise_steps - 1, steps - 1)):
                best.offer()
        best.restore()
        return self

    def lambdas_per_value(self) -> list[float]:
        """Each block's lambda over its number of values: the weight of a bit in its loss."""
        return [math.exp(v) / n for v, n in zip(self._log_lmbda, self._n_values.tolist(), strict=True)]

    @torch.no_grad()
    def rounded_state(self) -> tuple[list[float], list[float]]:
        """Each block's MSE and its latents' bits, the latents rounded (the bits from every n-th
        latent, as when steering, always the same ones)."""
        latents = [torch.round(z) for z in self.model.latents]
        return (self._training_distortion(latents).tolist(),
                self.model.latent_bits(latents, self._steer_every).tolist())

    def fine_tune(self, steps: int, latent_bits: list[float]) -> GridTraining:
        """``steps`` more steps with rounded latents at a tenth of the learning rate, each lambda
        steered towards a new ``latent_bits`` (after the step was changed to fit the budget)."""
        self.latent_bits = [max(bits, 1.0) for bits in latent_bits]
        for iteration in range(steps):
            self._step("round", 0.1 * 0.5 * (1 + math.cos(math.pi * iteration / steps)) + 1e-3, iteration)
        return self

    @torch.no_grad()
    def boundary_moves(self, block: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices into ``block``'s latents flattened level by level of those within :data:`TRIM_BAND` of
        a rounding boundary whose other integer neighbour is nearer the ARM's location (fewer bits),
        nearest the boundary first, and those neighbours."""
        latents = self.block_latents(block)
        rounded = torch.round(latents)
        location = self.model.locations([torch.round(z) for z in self.model.latents])[block]
        other = rounded + torch.sign(latents - rounded)
        gap = 0.5 - (latents - rounded).abs()
        indices = torch.nonzero((gap < TRIM_BAND) & ((other - location).abs() < (rounded - location).abs()))[:, 0]
        indices = indices[torch.argsort(gap[indices], stable=True)]
        return indices, other[indices]

    def block_latents(self, block: int) -> torch.Tensor:
        """A copy of ``block``'s latents flattened level by level."""
        return torch.cat([z[block].detach().reshape(-1) for z in self.model.latents])

    @torch.no_grad()
    def set_block_latents(self, block: int, flat: torch.Tensor) -> None:
        """Set ``block``'s latents from ``flat`` (as :meth:`block_latents` gives them)."""
        offset = 0
        for z in self.model.latents:
            n = z[block].numel()
            z[block] = flat[offset:offset + n].reshape(z[block].shape)
            offset += n

    @torch.no_grad()
    def coarsen(self, block: int, log2_ratio: float) -> float:
        """Multiply ``block``'s coefficient step by 2**log2_ratio, its coefficient latents divided to
        match (fewer bits after rounding when positive, more when negative: used to fit the budget).
        The step gets no finer than :data:`MAX_LATENT` allows; returns the log2 ratio applied."""
        images = self.model.latents[0][block, : self.spec.components]
        log2_ratio = max(log2_ratio, math.log2(max(images.abs().max().item(), 1e-30) / MAX_LATENT))
        ratio = 2.0**log2_ratio
        images /= ratio
        self.model.steps[block] *= ratio
        return log2_ratio

    @torch.no_grad()
    def results(self, blocks: list[int] | None = None) -> list[GridFit]:
        """Each block's model (or those of ``blocks``) as numpy arrays."""
        model = self.model
        latents = [torch.round(z) for z in model.latents]
        pred, coefficients = model(latents)
        mse, latent_bits = self._distortion(pred).tolist(), model.latent_bits(latents).tolist()
        rms = coefficients.pow(2).mean(1).sqrt().cpu().numpy().astype(np.float64)

        def layers(module, b):
            return [(l.weight[b].detach().cpu().numpy().astype(np.float64),
                     l.bias[b].detach().cpu().numpy().astype(np.float64)) for l in module]

        return [GridFit(
            spec=self.spec,
            step=model.steps[b],
            latents=[z[b].cpu().numpy().astype(np.int64) for z in latents],
            synthesis=layers(model.synthesis, b),
            arm=layers(model.arm, b),
            taps=model.taps[b].detach().cpu().numpy().astype(np.float64) if self.spec.filtered else None,
            basis=model.basis[b].detach().cpu().numpy().astype(np.float64),
            mean=model.mean[b].detach().cpu().numpy().astype(np.float64),
            coefficient_rms=rms[b],
            mse=mse[b],
            latent_bits=latent_bits[b],
        ) for b in (range(model.blocks) if blocks is None else blocks)]


RATE_FIXES = 5
"""Times the coefficient step is changed to bring a stream into [:data:`FILL`, 1] x its budget."""
FILL = 0.99
"""A stream under this share of its budget gets a finer coefficient step (the quality it leaves unused:
at 0.97 streams took 98.5 % of their budgets on average, at 0.99 99.4 %, +0.05 dB, docs/method.md)."""
TRAIN_FILL = 0.99
"""Training steers the latents' bits to this share of what the budget leaves them (the parameters'
bits estimated; at 0.97 streams used 1.5 % less of their budgets, docs/method.md)."""
FINE_TUNE_STEPS = 40
"""Steps of fine-tuning after each change of the coefficient step, at most (1 per 25 steps of the fit:
40 at the default 1,000; a 60-step test fit spent four fifths of its time in 200 fine-tuning steps)."""
SEARCH_STEPS = 100
"""Effort "best": steps of each brief fit of :func:`searched_spec` (three at most); when another spec
than the rule's wins, the block is fitted with both and keeps the better stream (brief fits ranked specs
within a few tenths of a dB in another order than full ones: docs/method.md)."""
TRIM_BAND = 0.05
"""The packer's first way into the budget: latents within this of a rounding boundary (where the rounded
phase of training leaves many, its gradients pushing them across and back) are rounded to their other
neighbour where that is nearer the ARM's location, as few as bring the stream within budget: fewer bits
at a small cost, where a coarser step re-rounds every latent (docs/method.md)."""
TRIM_TRIES = 6
"""Streams packed at most to find how many latents to move (:data:`TRIM_BAND`), by false position."""
ROUNDING_PASSES = {"fast": 2, "default": 6, "best": 8}
"""Passes of :func:`~xr_inr.methods.grid.rounding.rounded_again` after packing, per effort; the fast effort's
only for blocks of at most :data:`FAST_ROUNDING_LATENTS` coefficient latents."""
FAST_ROUNDING_LATENTS = 2**16
"""A pass costs time in proportion to the coefficient latents (k h w): 0.1-0.3 s each up to this many
(100 x 100 blocks of k <= 6, 64 x 64 ones of k <= 16), about 0.6 s at 200,000, where the fast effort's fit
already takes up to 4 of its 5 s per block (docs/method.md, "The fast effort rounds again")."""
FINE_TUNE_FROM = 0.1
"""... when some block's step changed by at least 2**this (7 %): smaller changes are packed again at
once (the fine-tuning bought nothing measurable after them, and cost the default effort 7 % more time)."""


def encode(cubes: list[np.ndarray], budget_bits: list[float], fixed_bits: list[float], codec) -> list[bytes]:
    """The payloads of (bands, h, w) blocks (NaN: left out of the fit) with ``codec``'s settings,
    blocks of the same architecture fitted together (:func:`fit_and_pack`)."""
    targets, valids, affines = [], [], []
    for cube in cubes:
        nan = np.isnan(cube)
        lo, scale = float(np.nanmin(cube)), float(np.nanmax(cube)) - float(np.nanmin(cube))
        targets.append(np.where(nan, 0.0, (cube - lo) / scale))
        valids.append(~nan if nan.any() else None)
        affines.append(AFFINE.pack(lo, scale))
    search_steps = SEARCH_STEPS if codec.effort == "best" else 0
    models = fit_and_pack(targets, valids, budget_bits, fixed_bits, components=codec.components, steps=codec.steps,
                          lr=codec.lr, seed=codec.seed, device=codec.device, search_steps=search_steps,
                          rounding_passes=ROUNDING_PASSES[codec.effort],
                          rounding_latents=FAST_ROUNDING_LATENTS if codec.effort == "fast" else None)
    return [affine + model for affine, model in zip(affines, models, strict=True)]


def pixel_values(target: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """A block's (pixels, bands) values, masked elements replaced by their band's mean (for the PCA),
    and the mask as weights (None when nothing is masked)."""
    bands = target.shape[0]
    values = np.ascontiguousarray(target.reshape(bands, -1).T, dtype=np.float64)
    weights = None if valid is None else valid.reshape(bands, -1).T.astype(np.float64)
    if weights is not None:
        band_mean = (values * weights).sum(0) / np.maximum(weights.sum(0), 1)
        values = np.where(weights > 0, values, band_mean)
    return values, weights


DCT_TILE = 8
"""Side of the squares :func:`coefficient_spectrum` transforms (JPEG's)."""


def coefficient_spectrum(values: np.ndarray, shape: tuple[int, int], count: int) -> np.ndarray:
    """(count, coefficients): the squared 2-D DCT coefficients of the first ``count`` PCA coefficient images
    of ``values`` (pixels, bands) laid out as ``shape``, each image cut into :data:`DCT_TILE` squares (the
    edge rows and columns that fill no whole square left out): what a block transform coder codes, local
    in space (a coefficient image with a few bright structures) and in frequency (a smooth one)."""
    mean, basis = pca(values, count)
    images = matmul(basis, (values - mean).T).reshape(count, *shape)
    tile = max(1, min(DCT_TILE, *shape))
    rows, cols = shape[0] // tile, shape[1] // tile
    squares = images[:, : rows * tile, : cols * tile].reshape(count, rows, tile, cols, tile)
    i = np.arange(tile)
    dct = np.cos(np.pi * (i[None, :] + 0.5) * i[:, None] / tile) * np.sqrt(2.0 / tile)  # orthonormal DCT-II
    dct[0] /= np.sqrt(2.0)
    return np.square(dct @ squares.transpose(0, 1, 3, 2, 4) @ dct.T).reshape(count, -1)


def block_spec(target: np.ndarray, valid: np.ndarray | None, budget_bits: float,
               components: int | None = None) -> GridSpec:
    """The architecture for a block (bands, h, w, normalised): :func:`choose_spec` with ``components``,
    or with the block's :func:`coefficient_spectrum` (the water-filling cap)."""
    bands, h, w = target.shape
    spectrum = None
    if components is None:
        count = bands
        spectrum = coefficient_spectrum(pixel_values(target, valid)[0], (h, w), count)
    return choose_spec(bands, h, w, budget_bits, components, spectrum)


def per_block(function, blocks: list) -> list:
    """``function`` of each of ``blocks``, in threads when there are several (a batch's CPU work between
    or after its fits on a GPU: numpy's products and the compiled ARM release the GIL), numpy's BLAS on
    one thread each meanwhile: the blocks are the parallelism. Threads each multiplying on every core slow
    each other down: four 100 x 100 x 198 blocks (default effort, 100 steps) packed in 9.6 s instead of 5.9 s
    in two threads on two cores, the same bytes (docs/benchmarks.md, "BLAS threads in a batch")."""
    if len(blocks) <= 1:
        return [function(block) for block in blocks]
    workers = min(len(blocks), os.cpu_count() or 1)
    with limit_blas(1) or contextlib.nullcontext(), ThreadPoolExecutor(workers) as pool:
        return list(pool.map(function, blocks))


GPU_FITS = 2
"""Batches that train at once on one CUDA device in a process (the accessor's threads would otherwise put
one batch per CPU core on it); a guess: the one GPU measurement (docs/method.md) ran with it, none without."""
_DEVICE_SLOTS: dict[str, threading.BoundedSemaphore] = {}
_SLOTS_LOCK = threading.Lock()


def _device_slot(device: str | None):
    """A context that waits for one of the :data:`GPU_FITS` slots of a CUDA device (nothing on the CPU)."""
    chosen = pick_device(device)
    if chosen.type != "cuda":
        return contextlib.nullcontext()
    with _SLOTS_LOCK:
        return _DEVICE_SLOTS.setdefault(str(chosen), threading.BoundedSemaphore(GPU_FITS))


def fit_and_pack(targets: list[np.ndarray], valids: list[np.ndarray | None], budget_bits: list[float],
                 fixed_bits: list[float], components: int | None = None, steps: int = 1000, lr: float = 1e-2,
                 seed: int = 0, device: str | None = None, search_steps: int = 0,
                 rounding_passes: int = 0, rounding_latents: int | None = None) -> list[bytes]:
    """Fit and pack each target (bands, h, w, normalised to [0, 1]) within its ``budget_bits`` when it can;
    blocks that get the same architecture (:func:`block_spec`) are fitted together as one batch
    (:func:`fit_batch`), halved as long as the device runs out of memory.

    ``search_steps`` > 0 (and ``components`` None): each block is also fitted with the architecture
    that :func:`searched_spec` finds by brief fits of this many steps, when it is another, and keeps
    the stream that decodes better (:func:`stream_error`).

    ``fixed_bits``: what the rest of each stream (header, mask, affine, checksum) takes;
    ``rounding_passes``: see :func:`pack_within_budget`; none for blocks of more than ``rounding_latents``
    coefficient latents (None: no limit).
    """
    batches: dict[GridSpec, list[int]] = {}
    specs = per_block(lambda i: block_spec(targets[i], valids[i], budget_bits[i], components),
                      list(range(len(targets))))
    for i, (spec, target, valid, budget) in enumerate(zip(specs, targets, valids, budget_bits, strict=True)):
        batches.setdefault(spec, []).append(i)
        if search_steps and components is None:
            searched = searched_spec(spec, target, valid, budget, fixed_bits[i], search_steps, lr, seed, device)
            if searched != spec:
                batches.setdefault(searched, []).append(i)
    tried: list[list[bytes]] = [[] for _ in targets]

    def fit(spec: GridSpec, members: list[int]) -> None:
        latents = spec.components * spec.height * spec.width
        passes = rounding_passes if rounding_latents is None or latents <= rounding_latents else 0
        try:
            with _device_slot(device):
                payloads = fit_batch(spec, [targets[i] for i in members], [valids[i] for i in members],
                                     [budget_bits[i] for i in members], [fixed_bits[i] for i in members],
                                     steps=steps, lr=lr, seed=seed, device=device, rounding_passes=passes)
        except torch.OutOfMemoryError:
            if len(members) == 1:
                raise
        else:
            for i, payload in zip(members, payloads, strict=True):
                tried[i].append(payload)
            return
        # here, out of the except clause, the exception and the batch's tensors it held are gone
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        fit(spec, members[: len(members) // 2])
        fit(spec, members[len(members) // 2 :])

    for spec, members in batches.items():
        fit(spec, members)
    return [payloads[0] if len(payloads) == 1 else
            min(payloads, key=lambda p: stream_error(p, targets[i], valids[i], budget_bits[i] - fixed_bits[i]))
            for i, payloads in enumerate(tried)]


def searched_spec(spec: GridSpec, target: np.ndarray, valid: np.ndarray | None, budget_bits: float,
                  fixed_bits: float, steps: int, lr: float = 1e-2, seed: int = 0,
                  device: str | None = None) -> GridSpec:
    """Of ``spec`` and the specs with the next fewer and next more basis vectors of :data:`ARCHITECTURES`
    (:func:`choose_spec` with that k), the one whose stream, fitted ``steps`` steps and packed, decodes
    best (:func:`stream_error`): the water-filling rule's k was up to 0.8 dB from the best k measured
    (docs/method.md)."""
    ks = sorted({row[0] for row in ARCHITECTURES if row[0] <= spec.bands} | {spec.components})
    at = ks.index(spec.components)
    candidates = list(dict.fromkeys([spec] + [choose_spec(spec.bands, spec.height, spec.width, budget_bits, k)
                                              for k in ks[max(at - 1, 0):at] + ks[at + 1:at + 2]]))
    errors = []
    for candidate in candidates:
        with _device_slot(device):
            [payload] = fit_batch(candidate, [target], [valid], [budget_bits], [fixed_bits], steps=steps, lr=lr,
                                  seed=seed, device=device)
        errors.append(stream_error(payload, target, valid, budget_bits - fixed_bits))
    return candidates[errors.index(min(errors))]


def stream_error(payload: bytes, target: np.ndarray, valid: np.ndarray | None,
                 budget_bits: float) -> tuple[bool, float]:
    """(over ``budget_bits``, mean squared error of the decoded ``payload`` against ``target``): the
    smallest is the best."""
    _, height, width = target.shape
    decoded = decode(AFFINE.pack(0.0, 1.0) + payload, target.shape, np.arange(height), np.arange(width))
    error = (decoded - target) ** 2
    return 8 * len(payload) > budget_bits, float(error.mean() if valid is None else error[valid].mean())


def fit_batch(spec: GridSpec, targets: list[np.ndarray], valids: list[np.ndarray | None], budget_bits: list[float],
              fixed_bits: list[float], steps: int = 1000, lr: float = 1e-2, seed: int = 0,
              device: str | None = None, rounding_passes: int = 0) -> list[bytes]:
    """Train blocks of one ``spec`` as one batch (:class:`GridTraining`) and pack each within its budget
    (:func:`pack_within_budget`)."""
    latent_bits = [max(TRAIN_FILL * (budget - fixed - estimated_param_bits(spec)), 0.02 * budget)
                   for budget, fixed in zip(budget_bits, fixed_bits, strict=True)]
    training = GridTraining(targets, valids, spec, latent_bits, lr=lr, seed=seed, device=device).train(steps)
    return pack_within_budget(training, targets, valids, budget_bits, fixed_bits,
                              fine_tune_steps=min(FINE_TUNE_STEPS, max(1, steps // 25)),
                              rounding_passes=rounding_passes)


def pack_within_budget(training: GridTraining, targets: list[np.ndarray], valids: list[np.ndarray | None],
                       budget_bits: list[float], fixed_bits: list[float],
                       fine_tune_steps: int = FINE_TUNE_STEPS, rounding_passes: int = 0) -> list[bytes]:
    """Pack each trained model of a batch and bring its stream into [:data:`FILL`, 1] x its budget.

    A stream over budget is first trimmed (:func:`_trimmed`: a few latents moved off their rounding
    boundaries). While a stream is still over budget or under :data:`FILL` of it, its coefficient step is
    coarsened or refined by what the gap to the middle of that range should take, learning
    from each try how many bits a doubling of the step is worth per latent (first guess:
    :func:`doubling_saving`); the batch is then
    fine-tuned (``fine_tune_steps``; not after changes under :data:`FINE_TUNE_FROM`), each lambda
    steered to the measured bits left for its latents (the budget less the real parameter bytes,
    in the ARM's training bits), and the
    streams not yet done are packed again, :data:`RATE_FIXES` times at most. Each block gets
    its stream within budget of the least MSE (the one it decodes to; the last stream when none is
    within budget): in small blocks, where the parameters' bytes dominate, a larger stream is
    not always a better one. With ``rounding_passes``, that stream's latents (or the last one's) are
    then rounded again (:func:`~xr_inr.methods.grid.rounding.rounded_again`), the stream kept where
    it decodes better within budget.
    """
    spec = training.spec
    n_coefficients = spec.components * spec.height * spec.width
    blocks = len(targets)
    aim = [(1 + FILL) / 2 * budget for budget in budget_bits]
    images = training.model.latents[0][:, : spec.components].detach().cpu().numpy().astype(np.float64)
    saving = [doubling_saving(images[b]) for b in range(blocks)]  # bits per latent per doubling of the step
    previous: list[float | None] = [None] * blocks
    log2_ratio = [0.0] * blocks
    latent_bits = list(training.latent_bits)
    payloads: list[bytes] = [b""] * blocks
    best: list[Packed | None] = [None] * blocks  # the best try within budget
    last: list[Packed | None] = [None] * blocks
    active = list(range(blocks))
    for attempt in range(RATE_FIXES + 1):
        fits = dict(zip(active, training.results(active), strict=True))
        streams = per_block(lambda b: packed(fits[b], targets[b], valids[b], hint=last[b] and last[b].params), active)
        for b, stream in zip(list(active), streams, strict=True):
            last[b], fit = stream, stream.fit
            payloads[b] = stream.payload
            size = 8 * len(payloads[b]) + fixed_bits[b]
            if size <= budget_bits[b] and (best[b] is None or stream.mse < best[b].mse):
                best[b] = stream
            if size > budget_bits[b] and attempt < RATE_FIXES:
                trimmed = _trimmed(training, b, targets[b], valids[b], budget_bits[b], fixed_bits[b], stream)
                if trimmed is not None and (best[b] is None or trimmed.mse < best[b].mse):
                    best[b] = trimmed
                if trimmed is not None and FILL * budget_bits[b] <= 8 * len(trimmed.payload) + fixed_bits[b]:
                    active.remove(b)
                    continue
            if FILL * budget_bits[b] <= size <= budget_bits[b] or attempt == RATE_FIXES:
                active.remove(b)
                continue
            if previous[b] is not None and log2_ratio[b]:
                saving[b] = float(np.clip((previous[b] - size) / (n_coefficients * log2_ratio[b]), 0.05, 2.0))
            wanted = float(np.clip((size - aim[b]) / (n_coefficients * saving[b]), -2.0, 4.0))
            exact_latent_bits = 8 * model_parts(payloads[b], *targets[b].shape)["latent_bytes"]
            training_per_exact = fit.latent_bits / max(exact_latent_bits, 1.0)
            log2_ratio[b] = training.coarsen(b, wanted)
            if abs(log2_ratio[b]) < 1e-3:  # under budget at the finest step allowed
                active.remove(b)
                continue
            latent_bits[b] = (exact_latent_bits + aim[b] - size) * training_per_exact
            previous[b] = size
        if not active:
            break
        if max(abs(log2_ratio[b]) for b in active) >= FINE_TUNE_FROM:
            training.fine_tune(fine_tune_steps, latent_bits)  # the blocks done train on, unused
    if rounding_passes:
        def rounded(b: int):
            again = rounded_again(last[b] if best[b] is None else best[b], targets[b], valids[b],
                                  budget_bits[b] - fixed_bits[b], aim[b] - fixed_bits[b], rounding_passes)
            return best[b] if again is None or best[b] is not None and best[b].mse <= again.mse else again

        best = per_block(rounded, list(range(blocks)))
    return [payload if chosen is None else chosen.payload for payload, chosen in zip(payloads, best, strict=True)]


def doubling_saving(images: np.ndarray) -> float:
    """Bits per latent that a doubling of the step saves coefficient images (k, h, w) of trained (float)
    latents, by the static estimate (:func:`estimate_bits`) for a step 2**0.25 coarser: the packer's first
    guess, 1 at high rates and far less where most latents are 0 (docs/method.md, "Longer fits")."""
    saved = estimate_bits(np.round(images)) - estimate_bits(np.round(images / 2**0.25))
    return float(np.clip(saved / (0.25 * images.size), 0.05, 2.0))


def _trimmed(training: GridTraining, b: int, target: np.ndarray, valid: np.ndarray | None, budget_bits: float,
             fixed_bits: float, start: Packed) -> Packed | None:
    """The stream of block ``b`` brought within ``budget_bits`` from ``start`` (over it) by the fewest
    :meth:`GridTraining.boundary_moves` found in :data:`TRIM_TRIES` packings, aiming into [:data:`FILL`, 1]
    of the budget; None when even all the moves leave it over budget. The latents are left as they were."""
    indices, values = training.boundary_moves(b)
    saved = training.block_latents(b)

    def stream(count: int) -> tuple[Packed, float]:
        moved = saved.clone()
        moved[indices[:count]] = values[:count]
        training.set_block_latents(b, moved)
        [fit] = training.results([b])
        tried = packed(fit, target, valid, hint=start.params)
        return tried, 8 * len(tried.payload) + fixed_bits

    aim = (1 + FILL) / 2 * budget_bits
    over, over_size, fits = 0, 8 * len(start.payload) + fixed_bits, len(indices)  # counts of moves: over, within
    found, fits_size = stream(fits)
    if fits_size > budget_bits:
        found = None
    for _ in range(TRIM_TRIES - 1):
        if found is None or fits_size >= FILL * budget_bits or fits - over <= 1:
            break
        count = over + round((over_size - aim) / (over_size - fits_size) * (fits - over))  # false position
        count = min(max(count, over + 1), fits - 1)
        tried, size = stream(count)
        if size <= budget_bits:
            fits, fits_size, found = count, size, tried
        else:
            over, over_size = count, size
    training.set_block_latents(b, saved)
    return found
