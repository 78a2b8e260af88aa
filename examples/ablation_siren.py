"""Which parts of the paper's SIREN codec (method="siren") matter: one cube, one rate, one change at a time.

    python examples/ablation_siren.py [CUBE] [--bpppb 0.1]

Prints a markdown table (PSNR over the whole cube with R = max - min of the
original, mean SAM in degrees, rate with every byte counted, and the PSNR the
same fit had before its weights were rounded to float16). The default cube
is Jasper Ridge from ../shared/datasets. docs/method.md shows its output.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from xr_inr import INRCodec, inspect
from xr_inr.methods.siren import fitting
from xr_inr.tools.datasets import load
from xr_inr.metrics import psnr, sam_deg

DEFAULT_CUBE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "jasper_ridge_100x100x198.npz"

VARIANTS = [
    ("default: successive-halving search over depths 1-5, 2,000 steps, lr 2e-4", {}),
    *[(f"fixed depth {depth} (widest that fits), no search", {"depth": depth}) for depth in range(1, 6)],
    ("default with lr 1e-3 instead of 2e-4", {"lr": 1e-3}),
    ("default with 4,000 steps instead of 2,000", {"steps": 4000}),
]


def capture_fits() -> list:
    """Record every final fit the codec makes, to read its float32 quality (before fp16 storage)."""
    fits = []
    original = fitting.search_and_fit

    def recording(*args, **kwargs):
        result = original(*args, **kwargs)
        fits.append(result)
        return result

    fitting.search_and_fit = recording  # the codec imports it at encode time
    return fits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cube", nargs="?", default=str(DEFAULT_CUBE))
    parser.add_argument("--bpppb", type=float, default=0.1)
    args = parser.parse_args()
    da = load(args.cube)
    cube = np.asarray(da.values)
    print(f"{Path(args.cube).name}: {cube.shape} (band, y, x) {cube.dtype}, target {args.bpppb} bpppb\n")
    fits = capture_fits()
    print("| variant | bpppb | architecture | PSNR dB | SAM ° | PSNR with fp32 weights | encode s |")
    print("|---|---|---|---|---|---|---|")
    for label, options in VARIANTS:
        codec = INRCodec(bpppb=args.bpppb, method="siren", **options)
        start = time.perf_counter()
        stream = codec.encode(cube)
        seconds = time.perf_counter() - start
        decoded = codec.decode(stream)
        info = inspect(stream)
        print(f"| {label} | {info['bpppb']:.4f} | {info['depth']} x {info['width']} "
              f"| {psnr(cube, decoded):.2f} | {sam_deg(cube, decoded):.2f} | {fits[-1].psnr:.2f} "
              f"| {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
