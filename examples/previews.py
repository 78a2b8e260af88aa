"""False-colour previews of a compressed store at several resolutions, from the stored networks.

    python examples/previews.py scene.zarr previews/ --scales 0.25,0.5,1,2

Each preview evaluates the networks on its own grid only (``xr_inr.open_zarr(store,
scale=...)``); scale 2 draws twice as many pixels as were stored.
"""

import argparse
import time
from pathlib import Path

from xr_inr.commands import preview
from xr_inr.core.decode import decode_counter


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("folder")
    parser.add_argument("--scales", default="0.25,0.5,1,2")
    args = parser.parse_args(argv)

    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    for scale in (float(s) for s in args.scales.split(",")):
        decode_counter.reset()
        start = time.perf_counter()
        rgb = preview(args.store, folder / f"preview_{scale:g}.png", scale=scale)
        print(f"scale {scale:g}: {rgb.shape[1]} x {rgb.shape[0]} pixels, {decode_counter.values} values "
              f"evaluated, {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
