"""The ``xr-inr`` command line: ``xr-inr demo ...``, ``xr-inr bench ...`` and ``xr-inr bench-read ...``.

Each subcommand parses its own options (``main`` of its module in
``xr_inr.tools``) and is imported only when used, so ``demo`` does not need
the benchmark's extra dependencies.
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xr-inr", description="Hyperspectral compression with implicit neural representations."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{demo,bench,bench-read}")
    commands.add_parser("demo", add_help=False, help="compress one cube and report rate and quality")
    commands.add_parser("bench", add_help=False, help="rate-distortion benchmark: codecs x rates x datasets")
    commands.add_parser("bench-read", add_help=False, help="read speed of a 1000 x 1000-pixel store vs zstd")
    args, rest = parser.parse_known_args(argv)
    if args.command == "demo":
        from .tools import demo as command
    elif args.command == "bench":
        from .tools import bench as command
    else:
        from .tools import readbench as command
    command.main(rest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
