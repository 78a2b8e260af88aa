"""The ``xr-inr`` command line: ``xr-inr demo ...`` and ``xr-inr bench ...``.

Each subcommand parses its own options (``xr_inr.demo.main``,
``xr_inr.bench.main``) and is imported only when used, so ``demo`` does not
need the benchmark's extra dependencies.
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xr-inr", description="Hyperspectral compression with implicit neural representations."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{demo,bench}")
    commands.add_parser("demo", add_help=False, help="compress one cube and report rate and quality")
    commands.add_parser("bench", add_help=False, help="rate-distortion benchmark: codecs x rates x datasets")
    args, rest = parser.parse_known_args(argv)
    if args.command == "demo":
        from .tools import demo

        demo.main(rest)
    else:
        from .tools import bench

        bench.main(rest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
