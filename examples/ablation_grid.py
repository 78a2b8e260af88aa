"""Ablation of the "grid" method: which of its parts the rate-distortion gain comes from.

    .venv/bin/python examples/ablation_grid.py [--data CUBE.npz] [--bpppb 0.1] [--steps 1000]

Each variant is encoded to real bytes (every byte counted: the payload plus the
41 bytes of stream header, normalisation and checksum that INRCodec adds) and
decoded with numpy. PSNR over the whole cube with R = max - min of the
original; SAM is the mean spectral angle in degrees. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from xr_inr.core.decode import restore_dtype
from xr_inr.core.stream import AFFINE
from xr_inr.methods.grid.fitting import GridTraining, block_spec, fit_and_pack, pack_within_budget
from xr_inr.methods.grid.model import GridSpec
from xr_inr.methods.grid.payload import decode, estimated_param_bits
from xr_inr.metrics import psnr, sam_deg

STREAM_BYTES = 21 + 16 + 4  # header, affine normalisation, checksum (xr_inr.core.stream)
REPO = Path(__file__).resolve().parent.parent


def encode_variant(target, budget_bits, spec, steps, freeze=()):
    """As :func:`xr_inr.methods.grid.fitting.fit_and_pack`, with a chosen spec and parts of the model frozen."""
    latent_bits = 0.97 * (budget_bits - 8 * STREAM_BYTES - estimated_param_bits(spec))
    training = GridTraining([target], [None], spec, [max(latent_bits, 0.02 * budget_bits)])
    model = training.model
    if "basis" in freeze:
        model.basis.requires_grad_(False)
        model.mean.requires_grad_(False)
    if "arm" in freeze:  # the ARM keeps its linear predictor and one learned scale
        for layer in model.arm[1:]:
            layer.weight.requires_grad_(False)
        for layer in model.arm[1:-1]:
            layer.bias.requires_grad_(False)
    training.train(steps)
    return pack_within_budget(training, [target], [None], [budget_bits], [8 * STREAM_BYTES])[0]


def main(argv=None):
    data_dir = Path(os.environ.get("XR_INR_DATA") or REPO.parent / "shared" / "datasets")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=data_dir / "jasper_ridge_100x100x198.npz")
    parser.add_argument("--bpppb", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--only", help="comma-separated variant names (default: all)")
    args = parser.parse_args(argv)
    original = np.load(args.data)["cube"]
    cube = original.transpose(2, 0, 1).astype(np.float64)
    lo, scale = cube.min(), np.ptp(cube)
    target = (cube - lo) / scale
    bands, h, w = target.shape
    budget_bits = 8 * int(args.bpppb * cube.size / 8)
    spec = block_spec(target, None, budget_bits)
    no_mlp = GridSpec(bands, h, w, spec.components, (0,), 0, spec.arm_hidden)

    def fit(steps):
        return fit_and_pack([target], [None], [budget_bits], [8 * STREAM_BYTES], steps=steps)[0]

    variants = {
        "default": lambda: fit(args.steps),
        "no synthesis MLP, no extra latents": lambda: encode_variant(target, budget_bits, no_mlp, args.steps),
        "PCA basis and mean frozen": lambda: encode_variant(target, budget_bits, spec, args.steps, {"basis"}),
        "ARM: linear predictor, one scale": lambda: encode_variant(target, budget_bits, spec, args.steps, {"arm"}),
        f"{args.steps // 3} steps": lambda: fit(args.steps // 3),
        f"{3 * args.steps} steps": lambda: fit(3 * args.steps),
    }
    if args.only:
        variants = {name: variants[name] for name in args.only.split(",")}
    print(f"{args.data.name} at {args.bpppb} bpppb; {spec.components} basis vectors, latent channels "
          f"{spec.channels}, synthesis width {spec.hidden}, ARM width {spec.arm_hidden}\n")
    print("| variant | bpppb | PSNR (dB) | SAM (°) | encode (s) |\n|---|---|---|---|---|")
    for name, encode in variants.items():
        start = time.perf_counter()
        payload = encode()
        seconds = time.perf_counter() - start
        decoded = decode(AFFINE.pack(lo, scale) + payload, (bands, h, w), np.arange(h), np.arange(w))
        decoded = restore_dtype(decoded, original.dtype).astype(np.float64)  # as INRCodec decodes
        rate = 8 * (len(payload) + STREAM_BYTES) / cube.size
        print(f"| {name} | {rate:.4f} | {psnr(cube, decoded):.2f} | {sam_deg(cube, decoded):.2f} | {seconds:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
