"""Compare the INR codec with the classical codecs on your own cube, at the same rates (``xr-inr bench``).

    python examples/compare_codecs.py scene.tif --bpppb 0.05,0.1 --out results/

Writes results/results.json, results.md (PSNR / SAM per codec and rate) and
rd.png, and prints the table. ``--codecs`` picks codecs (see ``xr-inr bench --help``).
"""

import argparse
from pathlib import Path

from xr_inr import cli


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cube", help="a cube file (GeoTIFF, ENVI .hdr, .mat, .npz)")
    parser.add_argument("--bpppb", default="0.05,0.1")
    parser.add_argument("--codecs", default="all")
    parser.add_argument("--out", default="results")
    parser.add_argument("--inr-steps", type=int, default=None, help="INR fitting steps (default: the codec's)")
    args = parser.parse_args(argv)

    bench = ["bench", "--data", args.cube, "--bpppb", args.bpppb, "--codecs", args.codecs, "--out", args.out]
    if args.inr_steps:
        bench += ["--inr-steps", str(args.inr_steps)]
    cli.main(bench)
    print((Path(args.out) / "results.md").read_text().split("# Every run")[0])


if __name__ == "__main__":
    main()
