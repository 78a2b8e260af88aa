"""Fitting the latent-grid model (method "grid") to one block with torch.

The loss is rate + distortion: the mean squared error of the normalised block
plus ``lmbda`` times the estimated bits of the latents per value, the bits
being -log2 of each latent's probability under the ARM's discretised Laplace
(the entropy coder's model). ``lmbda`` is steered during training so that the
latents fill the bits left by the budget. Latents are trained with additive
uniform noise, then with straight-through rounding (Ballé et al.; Cool-chic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...core.products import matmul
from ...core.stream import AFFINE
from ...pca import pca
from ..fitting import Adam, pick_device
from . import arm as lc
from .model import CONTEXT_SIZE, GridSpec, upsample_matrix
from .payload import ARCHITECTURES, choose_spec, estimated_param_bits, model_parts, pack, quantised_parameters

LOG2_SCALES = (-4.0, 13.0)  # the entropy coder's range of log2 Laplace scales
RATE_SAMPLE = 8
"""A training step estimates the latents' bits from every 8th point in coding order (a different
eighth each step, times 8): an unbiased estimate at an eighth of the cost, the rate term having
been three quarters of a step (docs/method.md)."""
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
    basis: np.ndarray
    mean: np.ndarray
    coefficient_rms: np.ndarray
    """Root mean square of each predicted coefficient (how much a basis error costs)."""
    mse: float
    latent_bits: float
    """Estimated bits of the rounded latents under the (float) ARM."""


def _linears(shapes, generator) -> torch.nn.ModuleList:
    layers = torch.nn.ModuleList(torch.nn.Linear(i, o) for o, i in shapes)
    with torch.no_grad():
        for layer in layers:
            bound = 1 / math.sqrt(layer.in_features)
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.zero_()
    return layers


def _mlp(layers: torch.nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    for layer in layers[:-1]:
        x = F.gelu(layer(x), approximate="tanh")
    return layers[-1](x)


class GridModel(torch.nn.Module):
    """Torch twin of :mod:`xr_inr.methods.grid.model`.

    Starts as quantised PCA: the coefficient images are the PCA coefficients
    divided by ``step``, the synthesis MLP's output layer is zero, and the
    ARM predicts each latent as the mean of its 4 nearest context points.
    The ARM is the float twin of :func:`xr_inr.methods.grid.arm.arm_integers`
    (ReLU, clipped; Mitchell's log2).
    """

    def __init__(self, spec: GridSpec, step: float, mean: np.ndarray, basis: np.ndarray,
                 coefficients: np.ndarray, generator: torch.Generator):
        super().__init__()
        self.spec = spec
        self.step = step
        grids = [torch.zeros(c, *spec.level_shape(level)) for level, c in enumerate(spec.level_channels())]
        grids[0][: spec.components] = torch.from_numpy(
            (coefficients.T / step).reshape(spec.components, spec.height, spec.width).astype(np.float32))
        self.latents = torch.nn.ParameterList(torch.nn.Parameter(g) for g in grids)
        self.synthesis = _linears(spec.synthesis_shapes(), generator)
        self.arm = _linears(spec.arm_shapes(), generator)
        with torch.no_grad():
            if spec.hidden:
                self.synthesis[-1].weight.zero_()
            predictor = self.arm[0].weight
            predictor.zero_()
            predictor[0, :4] = 0.25
            self.arm[-1].weight.zero_()
            self.arm[-1].bias.copy_(torch.tensor([0.0, 1.0]))
        self.basis = torch.nn.Parameter(torch.from_numpy(basis.astype(np.float32)))
        self.mean = torch.nn.Parameter(torch.from_numpy(mean.astype(np.float32)))
        self._register_coding_order(spec)
        for level in range(len(spec.channels)):
            gh, gw = spec.level_shape(level)
            up_y = upsample_matrix(np.arange(spec.height), gh, 2**level)
            up_x = upsample_matrix(np.arange(spec.width), gw, 2**level)
            self.register_buffer(f"up_y{level}", torch.from_numpy(up_y.astype(np.float32)))
            self.register_buffer(f"up_x{level}", torch.from_numpy(up_x.astype(np.float32)))

    def _register_coding_order(self, spec: GridSpec) -> None:
        """Every latent's context, its own index and stride feature, into all the latents flattened
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
    def retune_step(self, latent_bits: float) -> None:
        """Re-pick the coefficient step so that the ARM's bits meet ``latent_bits``.

        The ratio of the ARM's bits to the static estimate of the current
        latents is assumed to hold at the new step; the coefficient images are
        rescaled so that the reconstruction does not change.
        """
        k = self.spec.components
        rounded = [torch.round(z) for z in self.latents]
        images = rounded[0][:k].cpu().numpy()
        bits = self.row_bits(rounded)
        coefficient_bits = bits[self.coefficient_rows].sum().item()
        other_bits = bits[~self.coefficient_rows].sum().item()
        ratio = coefficient_bits / max(estimate_bits(images), 1.0)
        coefficients = self.latents[0][:k].cpu().numpy().reshape(k, -1).T * self.step
        new_step = choose_step(coefficients, images.shape[1:], max(latent_bits - other_bits, 1.0) / ratio)
        self.latents[0][:k] *= self.step / new_step
        self.arm[-1].bias[1] += math.log2(self.step / new_step)  # the ARM's scales follow the latents
        self.step = new_step

    def quantised(self, mode: str, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Latents with uniform noise ("noise", drawn from ``generator``), rounded with
        straight-through gradients ("round")."""
        out = []
        for z in self.latents:
            if mode == "noise":
                out.append(z + torch.rand(z.shape, generator=generator, device=z.device, dtype=z.dtype) - 0.5)
            else:
                out.append(z + (torch.round(z) - z).detach())
        return out

    def forward(self, latents: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixels, bands) normalised values and coefficients (pixels, components)."""
        k = self.spec.components
        features = [latents[0][:k].reshape(k, -1).T * self.step]
        for level, z in enumerate(latents):
            z = z[k:] if level == 0 else z
            if z.shape[0] == 0:
                continue
            up = torch.einsum("yi,cij,xj->yxc", getattr(self, f"up_y{level}"), z, getattr(self, f"up_x{level}"))
            features.append(up.reshape(self.spec.height * self.spec.width, -1))
        coefficients = features[0]
        if self.spec.hidden:
            coefficients = coefficients + _mlp(self.synthesis, torch.cat(features, dim=1))
        return coefficients @ self.basis + self.mean, coefficients

    def latent_bits(self, latents: list[torch.Tensor], every: int = 1, start: int = 0) -> torch.Tensor:
        """Estimated bits of the latents (a list by level) under the ARM's discretised Laplace.

        ``every`` > 1: an unbiased estimate from every ``every``-th latent (in the order of
        :meth:`_register_coding_order`, from ``start``), times ``every``.
        """
        return self.row_bits(latents, slice(start % every, None, every)).sum() * every

    def row_bits(self, latents: list[torch.Tensor], rows: slice = slice(None)) -> torch.Tensor:
        """Estimated bits of each latent of ``rows`` (one pass of the ARM over every level)."""
        flat = torch.cat([z.reshape(-1) for z in latents] + [latents[0].new_zeros(1)])
        context = flat.index_select(0, self.contexts[rows].reshape(-1)).reshape(-1, CONTEXT_SIZE)
        prediction = self.arm[0](context)
        h = torch.cat([_signed_mitchell(context - prediction), self.strides[rows, None]], dim=1)
        for layer in self.arm[1:-1]:
            h = F.hardtanh(layer(h), 0.0, lc.HIDDEN_CAP * 2.0**-lc.FRACTION)
        out = self.arm[-1](h)
        scale = torch.exp2(out[:, 1].clamp(*LOG2_SCALES))
        return laplace_interval_bits(flat.index_select(0, self.points[rows]), prediction[:, 0] + out[:, 0], scale)


def _signed_mitchell(d: torch.Tensor) -> torch.Tensor:
    """sign(d) log2(1 + |d|) with Mitchell's log2, as :func:`xr_inr.methods.grid.arm._compress`.

    Piecewise linear: with k = floor(log2(1 + |d|)) (read from the float32 exponent bits)
    it is d 2**-k + sign(d) (k + 2**-k - 1), so the gradient is 2**-k and one fused
    multiply-add carries it.
    """
    with torch.no_grad():
        k = ((1.0 + d.abs()).float().view(torch.int32) >> 23) - 127
        slope = ((127 - k) << 23).view(torch.float32).to(d.dtype)  # 2**-k
        offset = torch.sign(d) * (k + slope - 1.0)
    return torch.addcmul(offset, d, slope)


def laplace_interval_bits(x: torch.Tensor, mu: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """-log2 P(x) for integers x under a Laplace(mu, scale) discretised to unit bins."""
    upper = _laplace_cdf(x + 0.5, mu, scale)
    lower = _laplace_cdf(x - 0.5, mu, scale)
    return -torch.log2((upper - lower).clamp_min(2.0**-16))


def _laplace_cdf(x, mu, scale):
    d = (x - mu) / scale
    return 0.5 + 0.5 * torch.sign(d) * (1 - torch.exp(-d.abs()))


def estimate_bits(images: np.ndarray) -> float:
    """Bits of integer images (n, h, w) coded as the residual of the left/upper mean,
    under one Laplace per image: a static stand-in for the ARM, used to pick the step."""
    padded = np.pad(images.astype(np.float64), ((0, 0), (1, 0), (1, 0)))
    residual = images - np.round(0.5 * (padded[:, 1:, :-1] + padded[:, :-1, 1:]))
    total = 0.0
    for r in residual:
        b = max(np.abs(r).mean(), 1e-3)

        def cdf(x):
            return 0.5 + 0.5 * np.sign(x) * (1 - np.exp(-np.abs(x) / b))

        total += -np.log2(np.maximum(cdf(r + 0.5) - cdf(r - 0.5), 2.0**-16)).sum()
    return total


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


class GridTraining:
    """One latent-grid model being fitted to one block; ``coarsen`` and ``fine_tune`` trade quality
    for bits after ``train``.

    ``target`` is (bands, h, w) in [0, 1]; ``valid`` masks the elements that
    count in the distortion (NaN left out); ``latent_bits`` is the bits the
    latents may take. The coefficient step starts from the static estimate
    times ``step_margin`` (the ARM codes better), is re-picked after each
    warm-up of the ARM (:data:`ARM_WARM_UP`) and three times while training.
    """

    def __init__(self, target: np.ndarray, valid: np.ndarray | None, spec: GridSpec, latent_bits: float,
                 lr: float = 1e-2, step_margin: float = 1.15, seed: int = 0, device: str | None = None):
        dev = pick_device(device)
        self._noise = torch.Generator(device=dev).manual_seed(seed)  # per fit: fits in threads stay reproducible
        bands, h, w = target.shape
        values, weights = pixel_values(target, valid)
        mean, basis = pca(values, spec.components)
        coefficients = matmul(values - mean, basis.T)
        step = choose_step(coefficients, (h, w), step_margin * max(latent_bits, 1.0))
        self.spec = spec
        self.latent_bits = max(latent_bits, 1.0)
        self.model = GridModel(spec, step, mean, basis, coefficients, torch.Generator().manual_seed(seed)).to(dev)
        self._x = torch.from_numpy(values.astype(np.float32)).to(dev)
        self._weights = None if weights is None else torch.from_numpy(weights.astype(np.float32)).to(dev)
        self._n_values = float(values.size if weights is None else weights.sum())
        spectral = [self.model.basis, self.model.mean]  # small values: a gentler learning rate
        networks = list(self.model.synthesis.parameters()) + list(self.model.arm.parameters())
        groups = [(list(self.model.latents.parameters()), 1.0), (networks, 1.0), (spectral, 0.05)]
        self._lr = lr
        self._optimiser = Adam([{"params": p, "base": f} for p, f in groups], lr=lr)
        with torch.no_grad():  # at high rate, D falls by 2 ln 2 D per bit per value: start there
            start = self._distortion(self.model(self.model.quantised("round"))[0]).item()
        self._log_lmbda = math.log(2 * math.log(2) * max(start, 1e-12))

    def _distortion(self, pred: torch.Tensor) -> torch.Tensor:
        err = (pred - self._x) ** 2
        return err.mean() if self._weights is None else (err * self._weights).sum() / self._n_values

    def _step(self, mode: str, lr_scale: float, iteration: int) -> None:
        for group in self._optimiser.param_groups:
            group["lr"] = self._lr * lr_scale * group["base"]
        latents = self.model.quantised(mode, self._noise)
        pred, _ = self.model(latents)
        bits = self.model.latent_bits(latents, RATE_SAMPLE, iteration)
        loss = self._distortion(pred) + math.exp(self._log_lmbda) * bits / self._n_values
        self._optimiser.zero_grad()
        loss.backward()
        self._optimiser.step()
        if iteration % 10 == 9:  # steer the bits of the rounded latents towards the budget
            with torch.no_grad():
                rounded = self.model.latent_bits([torch.round(z) for z in self.model.latents]).item()
            self._log_lmbda += float(np.clip(0.5 * math.log(max(rounded, 1.0) / self.latent_bits), -0.2, 0.2))

    def _warm_up_arm(self, steps: int) -> None:
        """Fit the ARM alone to the rounded latents (their bits only), then re-pick the step with it."""
        optimiser = Adam(self.model.arm.parameters(), lr=self._lr)
        rounded = [torch.round(z).detach() for z in self.model.latents]
        for iteration in range(steps):
            loss = self.model.latent_bits(rounded, RATE_SAMPLE, iteration) / self._n_values
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        self.model.retune_step(self.latent_bits)

    def train(self, steps: int) -> GridTraining:
        """The schedule: the ARM's warm-up (:data:`ARM_WARM_UP`), then 80 % of the steps with
        noisy latents (cosine learning rate), then rounded latents at a tenth of the learning rate."""
        for warm_up in ARM_WARM_UP:
            self._warm_up_arm(math.ceil(warm_up * min(1.0, steps / WARM_UP_FULL_FROM) ** 3))
        noise_steps = int(0.8 * steps)
        retune_at = {int(0.1 * steps), int(0.25 * steps), int(0.4 * steps)}
        for iteration in range(steps):
            if iteration in retune_at:  # the ARM codes better than the static estimate: re-pick the step
                self.model.retune_step(self.latent_bits)
            if iteration < noise_steps:
                mode, progress, top = "noise", iteration / noise_steps, 1.0
            else:
                mode, progress, top = "round", (iteration - noise_steps) / max(steps - noise_steps, 1), 0.1
            self._step(mode, top * 0.5 * (1 + math.cos(math.pi * progress)) + 1e-3, iteration)
        return self

    def fine_tune(self, steps: int, latent_bits: float) -> GridTraining:
        """``steps`` more steps with rounded latents at a tenth of the learning rate, lambda
        steered towards a new ``latent_bits`` (after the step was changed to fit the budget)."""
        self.latent_bits = max(latent_bits, 1.0)
        for iteration in range(steps):
            self._step("round", 0.1 * 0.5 * (1 + math.cos(math.pi * iteration / steps)) + 1e-3, iteration)
        return self

    @torch.no_grad()
    def coarsen(self, log2_ratio: float) -> float:
        """Multiply the coefficient step by 2**log2_ratio, the coefficient latents divided to match
        (fewer bits after rounding when positive, more when negative: used to fit the budget).
        The step gets no finer than :data:`MAX_LATENT` allows; returns the log2 ratio applied."""
        images = self.model.latents[0][: self.spec.components]
        log2_ratio = max(log2_ratio, math.log2(max(images.abs().max().item(), 1e-30) / MAX_LATENT))
        ratio = 2.0**log2_ratio
        images /= ratio
        self.model.step *= ratio
        return log2_ratio

    @torch.no_grad()
    def result(self) -> GridFit:
        model = self.model
        latents = [torch.round(z) for z in model.latents]
        pred, coefficients = model(latents)

        def layers(module):
            return [(l.weight.detach().cpu().numpy().astype(np.float64),
                     l.bias.detach().cpu().numpy().astype(np.float64)) for l in module]

        return GridFit(
            spec=self.spec,
            step=model.step,
            latents=[z.cpu().numpy().astype(np.int64) for z in latents],
            synthesis=layers(model.synthesis),
            arm=layers(model.arm),
            basis=model.basis.detach().cpu().numpy().astype(np.float64),
            mean=model.mean.detach().cpu().numpy().astype(np.float64),
            coefficient_rms=coefficients.pow(2).mean(0).sqrt().cpu().numpy().astype(np.float64),
            mse=self._distortion(pred).item(),
            latent_bits=model.latent_bits(latents).item(),
        )


RATE_FIXES = 5
"""Times the coefficient step is changed to bring a stream into [:data:`FILL`, 1] x its budget."""
FILL = 0.97
"""A stream under this share of its budget gets a finer coefficient step (the quality it leaves unused)."""
FINE_TUNE_STEPS = 40
"""Steps of fine-tuning after each change of the coefficient step, at most (1 per 25 steps of the fit:
40 at the default 1,000; a 60-step test fit spent four fifths of its time in 200 fine-tuning steps)."""


def encode(cube: np.ndarray, budget_bits: float, fixed_bits: float, codec) -> bytes:
    """The payload of a (bands, h, w) block (NaN: left out of the fit) with ``codec``'s settings."""
    nan = np.isnan(cube)
    lo, scale = float(np.nanmin(cube)), float(np.nanmax(cube)) - float(np.nanmin(cube))
    normalised = np.where(nan, 0.0, (cube - lo) / scale)
    model = fit_and_pack(normalised, ~nan if nan.any() else None, budget_bits, fixed_bits, components=codec.components,
                         steps=codec.steps, lr=codec.lr, seed=codec.seed, device=codec.device)
    return AFFINE.pack(lo, scale) + model


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


def coefficient_spectrum(values: np.ndarray, shape: tuple[int, int], count: int) -> tuple[np.ndarray, np.ndarray]:
    """Variance and spatial innovation variance of the first ``count`` PCA coefficient images of
    ``values`` (pixels, bands) laid out as ``shape``: the innovation is the residual of the least-squares
    prediction of each coefficient from its W, N, NW and NE neighbours (what a causal coder pays for)."""
    mean, basis = pca(values, count)
    images = matmul(basis, (values - mean).T).reshape(count, *shape)
    variance = images.reshape(count, -1).var(axis=1)
    if shape[0] < 2 or shape[1] < 3:
        return variance, variance
    innovation = np.empty(count)
    for r, image in enumerate(images):
        near = np.stack([image[1:, :-2], image[:-1, 1:-1], image[:-1, :-2], image[:-1, 2:]], -1).reshape(-1, 4)
        centre = image[1:, 1:-1].reshape(-1)
        weights = np.linalg.lstsq(near, centre, rcond=None)[0]
        innovation[r] = np.mean((centre - near @ weights) ** 2)
    return variance, np.minimum(innovation, variance)


def block_spec(target: np.ndarray, valid: np.ndarray | None, budget_bits: float,
               components: int | None = None) -> GridSpec:
    """The architecture for a block (bands, h, w, normalised): :func:`choose_spec` with ``components``,
    or with the spectrum of the block's coefficient images (the water-filling cap)."""
    bands, h, w = target.shape
    spectrum = None
    if components is None:
        count = min(bands, max(row[0] for row in ARCHITECTURES))
        spectrum = coefficient_spectrum(pixel_values(target, valid)[0], (h, w), count)
    return choose_spec(bands, h, w, budget_bits, components, spectrum)


def fit_and_pack(target: np.ndarray, valid: np.ndarray | None, budget_bits: float, fixed_bits: float,
                 components: int | None = None, steps: int = 1000, lr: float = 1e-2, seed: int = 0,
                 device: str | None = None) -> bytes:
    """Fit and pack ``target`` (bands, h, w, normalised to [0, 1]) within ``budget_bits`` when it can.

    ``fixed_bits``: what the rest of the stream (header, mask, affine, checksum) takes.
    """
    spec = block_spec(target, valid, budget_bits, components)
    latent_bits = 0.97 * (budget_bits - fixed_bits - estimated_param_bits(spec))
    training = GridTraining(target, valid, spec, max(latent_bits, 0.02 * budget_bits), lr=lr, seed=seed,
                            device=device).train(steps)
    return pack_within_budget(training, target, valid, budget_bits, fixed_bits,
                              fine_tune_steps=min(FINE_TUNE_STEPS, max(1, steps // 25)))


def pack_within_budget(training, target: np.ndarray, valid: np.ndarray | None, budget_bits: float,
                       fixed_bits: float, fine_tune_steps: int = FINE_TUNE_STEPS) -> bytes:
    """Pack a trained model and bring the stream into [:data:`FILL`, 1] x ``budget_bits``.

    While the stream is over budget or under :data:`FILL` of it, the coefficient step is
    coarsened or refined by what the gap to the middle of that range should take, learning
    from each try how many bits a doubling of the step is worth per latent; the model is then
    fine-tuned (``fine_tune_steps``) with lambda steered to the measured bits left for the
    latents (the budget less the real parameter bytes, in the ARM's training bits), and packed
    again, :data:`RATE_FIXES` times at most. The largest stream within budget is returned
    (the last one when none is).
    """
    spec = training.spec
    n_coefficients = spec.components * spec.height * spec.width
    aim = (1 + FILL) / 2 * budget_bits
    saving, previous, log2_ratio = 1.0, None, 0.0  # bits per latent per doubling of the step: 1 at high rates
    best = None
    for attempt in range(RATE_FIXES + 1):
        fit = training.result()
        payload = pack(spec, fit.step, quantised_parameters(fit, target, valid), fit.latents)
        size = 8 * len(payload) + fixed_bits
        if size <= budget_bits and (best is None or len(payload) > len(best)):
            best = payload
        if FILL * budget_bits <= size <= budget_bits or attempt == RATE_FIXES:
            break
        if previous is not None and log2_ratio:
            saving = float(np.clip((previous - size) / (n_coefficients * log2_ratio), 0.05, 2.0))
        log2_ratio = float(np.clip((size - aim) / (n_coefficients * saving), -2.0, 4.0))
        exact_latent_bits = 8 * model_parts(payload, *target.shape)["latent_bytes"]
        training_per_exact = fit.latent_bits / max(exact_latent_bits, 1.0)
        log2_ratio = training.coarsen(log2_ratio)
        if abs(log2_ratio) < 1e-3:  # under budget at the finest step allowed
            break
        training.fine_tune(fine_tune_steps, (exact_latent_bits + aim - size) * training_per_exact)
        previous = size
    return payload if best is None else best
