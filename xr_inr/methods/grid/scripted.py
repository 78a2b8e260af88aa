"""The training step's tensor computations (:class:`~xr_inr.methods.grid.fitting.GridModel`'s), each
compiled by TorchScript: one call from Python runs the whole computation without Python's GIL.

Written op by op, a step released and took back the GIL at each of about 170 torch calls. Two fits in
threads (Dask's threaded scheduler) then waited on each other's hand-overs of the GIL, about a fifth of
their time on 64 x 64 blocks (docs/method.md, "Encoding cost: what each lever bought"). The functions run
unoptimised (:func:`_compiled`): the graph executor then calls each op as eager torch does, with the same
kernels and autograd, so a fit is the same bit for bit. The ARM's Mitchell compression runs between
:func:`arm_differences` and :func:`arm_laplace`, in eager torch (``fitting._SignedMitchell``).

The functions take tensors and plain numbers only (TorchScript's types): the model's layers as lists of
weights and biases, (blocks, out, in) and (blocks, out).
"""

from __future__ import annotations

import functools
import warnings
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def _compiled(function):
    """``function`` compiled by TorchScript, run with the graph executor's optimisations off: those
    derive gradients symbolically and may fuse ops, which can change a fit's floats."""
    with warnings.catch_warnings():  # TorchScript is deprecated in favour of torch.compile, which
        # compiles each new shape with a C++ compiler at run time (every block's fit has its own shapes)
        warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
        script = torch.jit.script(function)

    @functools.wraps(function)
    def run(*args):
        with torch.jit.optimized_execution(False):  # a per-thread setting
            return script(*args)

    return run


def _noisy(latents: List[Tensor], noise: List[List[Tensor]]) -> List[Tensor]:
    """Each level's latents (blocks, ...) plus uniform noise in [-1/2, 1/2): ``noise[level][block]`` drawn
    in [0, 1)."""
    return [z + torch.stack(drawn) - 0.5 for z, drawn in zip(latents, noise)]


def _rounded(latents: List[Tensor]) -> List[Tensor]:
    """Each level's latents rounded, with the gradient passed straight through."""
    return [z + (torch.round(z) - z).detach() for z in latents]


def _linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def _arm_differences(latents: List[Tensor], weight: Tensor, bias: Tensor, contexts: Tensor,
                     points: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(values (blocks, rows), differences (blocks, rows, context), predictions (blocks, rows, 1)): the
    latents at ``points``, their contexts at ``contexts`` less the ARM's linear prediction from them
    (``weight``, ``bias``), and that prediction. ``contexts`` (rows, context) and ``points`` (rows,) index
    a block's latents flattened level by level with one zero appended."""
    blocks = latents[0].shape[0]
    flat = torch.cat([z.reshape(blocks, -1) for z in latents] + [latents[0].new_zeros(blocks, 1)], dim=1)
    first = torch.arange(0, flat.numel(), flat.shape[1], dtype=contexts.dtype, device=flat.device)[:, None]
    flat = flat.reshape(-1)  # indexed in one dimension: index_add_ (the gradient) is 30x slower along dim 1
    context = flat.index_select(0, (contexts.reshape(1, -1) + first).reshape(-1)).reshape(
        blocks, contexts.shape[0], contexts.shape[1])
    values = flat.index_select(0, (points.reshape(1, -1) + first).reshape(-1)).reshape(blocks, points.shape[0])
    prediction = _linear(context, weight, bias)
    return values, context - prediction, prediction


def _arm_laplace(compressed: Tensor, prediction: Tensor, strides: Tensor, weights: List[Tensor],
                 biases: List[Tensor], hidden_cap: float, low: float, high: float) -> Tuple[Tensor, Tensor]:
    """(locations, scales), each (blocks, rows), from the ARM's MLP (``weights``/``biases``: its hidden
    layers, clipped ReLU up to ``hidden_cap``, and its output layer) over the ``compressed`` differences of
    :func:`_arm_differences` and each row's stride feature (``strides``, (rows,)): the ``prediction`` plus
    a correction, and log2 scales clamped to [``low``, ``high``]."""
    blocks = compressed.shape[0]
    h = torch.cat([compressed, strides[:, None].expand(blocks, -1, 1)], dim=2)
    for i in range(len(weights) - 1):
        h = F.hardtanh(_linear(h, weights[i], biases[i]), 0.0, hidden_cap)
    out = _linear(h, weights[-1], biases[-1])
    return prediction[..., 0] + out[..., 0], torch.exp2(out[..., 1].clamp(low, high))


def _laplace_cdf(x: Tensor, mu: Tensor, scale: Tensor) -> Tensor:
    d = (x - mu) / scale
    return 0.5 + 0.5 * torch.sign(d) * (1 - torch.exp(-d.abs()))


def _arm_bits(values: Tensor, compressed: Tensor, prediction: Tensor, strides: Tensor, weights: List[Tensor],
              biases: List[Tensor], hidden_cap: float, low: float, high: float) -> Tensor:
    """-log2 P(x), (blocks, rows), of the latents x (``values``) under the ARM's Laplace
    (:func:`_arm_laplace`) discretised to unit bins."""
    mu, scale = _arm_laplace(compressed, prediction, strides, weights, biases, hidden_cap, low, high)
    upper = _laplace_cdf(values + 0.5, mu, scale)
    lower = _laplace_cdf(values - 0.5, mu, scale)
    return -torch.log2((upper - lower).clamp_min(2.0**-16))


def _coefficients(latents: List[Tensor], steps: Tensor, taps: Tensor, up_y: List[Tensor], up_x: List[Tensor],
                  weights: List[Tensor], biases: List[Tensor], components: int, filtered: bool) -> Tensor:
    """(blocks, pixels, components): the coefficient images (the first ``components`` channels of level 0,
    filtered by their 3 x 3 ``taps`` when ``filtered``) times each block's step, plus the synthesis MLP's
    output (``weights``/``biases``; none: no MLP) from those and every other channel upsampled
    (``up_y``/``up_x``: each level's upsampling matrices)."""
    blocks, height, width = latents[0].shape[0], latents[0].shape[2], latents[0].shape[3]
    images = latents[0][:, :components]
    if filtered:  # model.filter_images: one grouped correlation over every block's images
        padded = F.pad(images.reshape(1, blocks * components, height, width), [1, 1, 1, 1], mode="replicate")
        images = images + F.conv2d(padded, taps.reshape(blocks * components, 1, 3, 3),
                                   groups=blocks * components).reshape(images.shape)
    features = [images.reshape(blocks, components, -1).transpose(1, 2) * steps[:, None, None]]
    if len(weights) == 0:
        return features[0]
    for level, z in enumerate(latents):
        if level == 0:
            z = z[:, components:]
        if z.shape[1] != 0:
            up = torch.einsum("yi,bcij,xj->byxc", up_y[level], z, up_x[level])
            features.append(up.reshape(blocks, height * width, -1))
    x = torch.cat(features, dim=2)
    for i in range(len(weights) - 1):
        x = F.gelu(_linear(x, weights[i], biases[i]), approximate="tanh")
    return features[0] + _linear(x, weights[-1], biases[-1])


def _projected_distortion(coefficients: Tensor, basis: Tensor, mean: Tensor, centre: Tensor, centred: Tensor,
                          centred_squares: Tensor, centred_sums: Tensor, n_values: Tensor) -> Tensor:
    """Each block's mean squared error (blocks,) of the values C B + m from the coefficients C alone
    (:meth:`~xr_inr.methods.grid.fitting.GridTraining._training_distortion`): X the block's values,
    ``centred`` X less ``centre`` (its initial mean), with their ``centred_squares`` and ``centred_sums``."""
    basis_t = basis.transpose(1, 2)
    offset = mean - centre
    projected = torch.bmm(centred, basis_t) - torch.bmm(offset[:, None], basis_t)
    synthesised = torch.bmm(coefficients, torch.bmm(basis, basis_t))
    wide = offset.double()
    total = (centred_squares - 2 * (wide * centred_sums).sum(dim=1)
             + coefficients.shape[1] * wide.pow(2).sum(dim=1)
             - (coefficients * (2 * projected - synthesised)).double().sum(dim=(1, 2)))
    return (total / n_values).to(coefficients.dtype)


noisy = _compiled(_noisy)
rounded = _compiled(_rounded)
arm_differences = _compiled(_arm_differences)
arm_laplace = _compiled(_arm_laplace)
arm_bits = _compiled(_arm_bits)
coefficients = _compiled(_coefficients)
projected_distortion = _compiled(_projected_distortion)
