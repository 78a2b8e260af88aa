"""The ``xr-inr`` command line: compress, decode, info, preview, stac, verify, upgrade (``xr_inr.commands``), and the
tools' demo, bench, bench-read, bench-scale, bench-batch and figures.

This module only parses arguments and prints; what each command does is a function of
``xr_inr.commands``. ``demo``, ``bench``, ``bench-read``, ``bench-scale``, ``bench-batch`` and ``figures`` parse their own
options (``xr_inr.tools``) and are imported only when used. Bad input ends with a one-line error on stderr and
exit status 1 (status 2 for bad arguments, as argparse does).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import sys

DESCRIPTION = "Hyperspectral compression with implicit neural representations."


def _chunks(text: str):
    """``64`` (spatial side) or ``y=64,x=32`` (per dimension, -1 for the whole dimension)."""
    try:
        if "=" not in text:
            return int(text)
        return {dim.strip(): int(size) for dim, size in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"chunks {text!r}: give a size (64) or sizes per dimension (y=64,x=64)")


def _bands(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bands {text!r}: give three band indices, R,G,B (e.g. 30,20,10)")


def _datetime(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"datetime {text!r}: give an ISO 8601 time, e.g. 2024-06-01T10:30:00Z")
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xr-inr", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True,
                                     metavar="{compress,decode,info,preview,stac,verify,upgrade,demo,bench,"
                                             "bench-read,bench-scale,bench-batch,figures}")

    p = commands.add_parser("compress", help="compress a cube file into a Zarr store",
                            description="Compress a hyperspectral cube (GeoTIFF, ENVI .hdr, NetCDF, Zarr, a published "
                                        ".mat scene, .npz) into a Zarr store: one network fitted per chunk, the "
                                        "chunks in parallel with Dask. CRS, transform and wavelengths are kept.")
    p.add_argument("input", help="the cube file")
    p.add_argument("store", help="the Zarr store to write (a directory, e.g. scene.zarr)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--bpppb", type=float, help="bits per pixel per band of every chunk (default 0.05)")
    rate.add_argument("--psnr", type=float, metavar="DB",
                      help="a quality target instead: each chunk gets the smallest stream found whose PSNR over the "
                           "chunk meets it (several fits per chunk; xr-inr info shows what each achieved)")
    p.add_argument("--chunks", type=_chunks, help="chunk size: 64 (spatial side) or y=64,x=64 "
                                                  "(default: all bands, at most 128 x 128 pixels)")
    p.add_argument("--method", choices=("grid", "siren"), default="grid", help="the codec's method (default grid)")
    p.add_argument("--effort", choices=("fast", "default", "best"), default="default",
                   help="encode time against quality (grid: 100, 1000 or 2000 fitting steps per chunk; "
                        "best after brief fits of three architectures)")
    p.add_argument("--steps", type=int, help="fitting steps per chunk instead of the effort's")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="threads of the local Dask scheduler (default: one per core)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="fit on a running dask.distributed cluster, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--variable", help="the cube's variable in a NetCDF or Zarr input with several")
    p.add_argument("--zarr-format", type=int, choices=(2, 3), default=3, help="Zarr format (default 3)")
    p.add_argument("--overwrite", action="store_true", help="replace the store if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = commands.add_parser("decode", help="decode a store to GeoTIFF, NetCDF or plain Zarr",
                            description="Decode a compressed cube to a GeoTIFF (.tif), NetCDF-4 (.nc) or plain "
                                        "Zarr (.zarr) file, keeping dtype, CRS, transform and wavelengths.")
    p.add_argument("store", help="the compressed Zarr store")
    p.add_argument("output", help="the file to write; its suffix (.tif, .nc, .zarr) picks the format")
    p.add_argument("--variable", help="the cube to decode, when the store holds several")
    p.add_argument("--overwrite", action="store_true", help="replace the output if it exists")

    p = commands.add_parser("info", help="describe a compressed store",
                            description="Variables, shape, dims, stored bytes, rates, and the chunks' methods "
                                        "and architectures of a compressed Zarr store.")
    p.add_argument("store", help="the compressed Zarr store")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    p = commands.add_parser("preview", help="a false-colour PNG, evaluated at any resolution",
                            description="Write a false-colour PNG of three bands, evaluating the stored networks "
                                        "on the preview's grid only (no full decode); each band stretched between "
                                        "its 2nd and 98th percentiles.")
    p.add_argument("store", help="the compressed Zarr store")
    p.add_argument("png", help="the PNG file to write")
    p.add_argument("--bands", type=_bands, help="R,G,B band indices (default: at 3/4, 1/2 and 1/4 of the bands)")
    p.add_argument("--scale", type=float, default=0.5, help="size relative to the stored cube (default 0.5)")
    p.add_argument("--variable", help="the cube to preview, when the store holds several")

    p = commands.add_parser("stac", help="a STAC Item for a compressed store",
                            description="Write a STAC Item (JSON) for a compressed store: the Zarr asset, the "
                                        "datacube and projection extensions, and the codec's inr: fields. It is "
                                        "validated against its schemas offline before it is written.")
    p.add_argument("store", help="the compressed Zarr store")
    p.add_argument("--out", help="the JSON file to write (default: standard output)")
    p.add_argument("--href", help="the asset's href (default: the store's absolute path)")
    p.add_argument("--id", dest="item_id", help="the Item id (default: the store's name)")
    p.add_argument("--datetime", type=_datetime, help="acquisition time, ISO 8601 (default: now)")
    p.add_argument("--variable", help="the cube to describe, when the store holds several")
    p.add_argument("--no-validate", action="store_true", help="skip schema validation (needs jsonschema)")

    p = commands.add_parser("verify", help="check every chunk of a compressed store against what was written",
                            description="Check every chunk of every xr-inr array of a store: present, the bytes "
                                        "the writer recorded (size and digest), a valid stream of the array's "
                                        "chunk shape and dtype (xr_inr.verify). Exit status 1 when a chunk is "
                                        "missing, mismatched or unreadable, or the write did not finish.")
    p.add_argument("store", help="the Zarr store to check")
    p.add_argument("--group", help="the group holding the cubes (default: the store's root)")
    p.add_argument("--decode", action="store_true", help="also decode every chunk")

    p = commands.add_parser("upgrade", help="record the chunk layout in an old Zarr format 2 store's metadata",
                            description="For Zarr format 2 stores written before 2026-11-26: record each xr-inr "
                                        "array's chunk shape and dtype (from its .zarray) in its xr_inr compressor "
                                        "config and in the consolidated metadata, in place, so that plain readers "
                                        "(xr.open_zarr) refuse a chunk of another layout. Metadata only: chunks are "
                                        "neither read nor rewritten (xr_inr.verify checks them). Running it again, "
                                        "or on a format 3 store, changes nothing.")
    p.add_argument("store", help="the Zarr store to upgrade")
    p.add_argument("--group", help="the group holding the cubes (default: the store's root)")

    commands.add_parser("demo", add_help=False, help="compress one cube in memory and report rate and quality")
    commands.add_parser("bench", add_help=False, help="rate-distortion benchmark: codecs x rates x datasets")
    commands.add_parser("bench-read", add_help=False, help="read speed of a 1000 x 1000-pixel store vs zstd")
    commands.add_parser("bench-scale", add_help=False,
                        help="compression time over 1 and 2 Dask workers, peak memory of a large cube")
    commands.add_parser("bench-batch", add_help=False,
                        help="chunks per second of batched fits (a GPU) against one chunk at a time on the CPU")
    commands.add_parser("figures", add_help=False, help="the docs' figures: decoded images, spectra, "
                                                        "rate-distortion and speed plots")
    return parser


def _print_info(report: dict) -> None:
    print(f"{report['store']}: {report['store_bytes']} bytes stored = {report['bpppb']:.4f} bpppb "
          "(every byte: chunks, metadata, coordinates)")
    for name, cube in report["cubes"].items():
        dims = ", ".join(f"{d}: {n}" for d, n in zip(cube["dims"], cube["shape"], strict=True))
        low, high = cube["chunk_bpppb_range"]
        print(f"  {name} ({dims}) {cube['dtype']}, {cube['chunks']} chunks of {tuple(cube['chunk_shape'])}")
        print(f"    chunks: {cube['chunk_bytes']} bytes = {cube['chunk_bpppb']:.4f} bpppb "
              f"(per chunk {low:.4f}-{high:.4f})")
        print("    methods: " + ", ".join(f"{m} x {n}" for m, n in cube["methods"].items()))
        if "psnr_target" in cube:
            line = f"    PSNR target {cube['psnr_target']:g} dB"
            if cube["chunk_psnr_range"] is not None:
                low, high = cube["chunk_psnr_range"]
                line += f", per chunk {low:.2f}-{high:.2f} dB"
            if cube["chunk_encodes_range"] is not None:
                low, high = cube["chunk_encodes_range"]
                line += f", {low}-{high} encodes" if low != high else f", {low} encodes"
            print(line)
            short = [key for key, value in cube["chunk_psnr"].items() if value < cube["psnr_target"]]
            if short:
                print(f"    {len(short)} chunks below the target: {', '.join(short[:10])}")
        for arch, n in cube["architectures"].items():
            print(f"    {n} x {arch}")


def _print_verify(report) -> int:
    """The report of ``xr_inr.verify``, a line per problem (20 of each kind at most); the exit status."""
    print(f"{report.store}: {'ok' if report.ok else 'problems found'}, {report.checked} chunks checked"
          + ("; the write did not finish (the same to_zarr call completes it)" if report.unfinished else ""))
    for kind in ("missing", "mismatched", "unreadable"):
        problems = getattr(report, kind)
        if problems:
            print(f"  {len(problems)} {kind}:")
            print("\n".join(f"    {why}" for _, _, why in problems[:20]))
    if report.unchecked:
        print(f"  no manifest (swapped chunks cannot be found): {', '.join(map(str, report.unchecked))}")
    if report.without_layout:
        print(f"  Zarr format 2 arrays without their chunk layout (xr-inr upgrade records it): "
              f"{', '.join(map(str, report.without_layout))}")
    return 0 if report.ok else 1


def run(args: argparse.Namespace) -> int:
    """Run a command; its exit status."""
    from . import commands

    if args.command == "compress":
        out = commands.compress(args.input, args.store, args.bpppb, psnr=args.psnr, chunks=args.chunks,
                                workers=args.workers, scheduler=args.scheduler, variable=args.variable,
                                zarr_format=args.zarr_format,
                                overwrite=args.overwrite, progress=not args.quiet, method=args.method,
                                steps=args.steps, effort=args.effort)
        print(f"{args.store}: {out.name} {dict(out.sizes)} {out.dtype}, {out.inr.nbytes} bytes in chunks = "
              f"{out.inr.bpppb:.4f} bpppb")
        if args.psnr is not None:
            achieved = [c["psnr"] for c in out.inr.inspect_chunks().values() if "psnr" in c]
            if achieved:
                print(f"  PSNR per chunk {min(achieved):.2f}-{max(achieved):.2f} dB (target {args.psnr:g})")
    elif args.command == "decode":
        commands.decode(args.store, args.output, variable=args.variable, overwrite=args.overwrite)
        print(f"wrote {args.output}")
    elif args.command == "info":
        report = commands.info(args.store)
        if args.json:
            print(json.dumps(report, indent=1))
        else:
            _print_info(report)
    elif args.command == "preview":
        rgb = commands.preview(args.store, args.png, bands=args.bands, scale=args.scale, variable=args.variable)
        print(f"wrote {args.png} ({rgb.shape[1]} x {rgb.shape[0]} pixels)")
    elif args.command == "verify":
        return _print_verify(commands.verify(args.store, group=args.group, decode=args.decode))
    elif args.command == "upgrade":
        changed = commands.upgrade(args.store, group=args.group)
        if not changed:
            print(f"{args.store}: nothing to upgrade (no Zarr format 2 xr-inr array lacks its chunk layout)")
        else:
            print(f"{args.store}: recorded the chunk layout of {len(changed)} array(s)")
        for name, layout in changed.items():
            print(f"  {name}: chunk_shape {tuple(layout['chunk_shape'])}, dtype {layout['dtype']}")
    elif args.command == "stac":
        item = commands.stac_item(args.store, href=args.href, item_id=args.item_id, datetime=args.datetime,
                                  variable=args.variable)
        if not args.no_validate:
            from .stac import validate

            validate(item)
        text = json.dumps(item.to_dict(), indent=1)
        if args.out:
            with open(args.out, "w") as out:
                out.write(text + "\n")
            print(f"wrote {args.out}")
        else:
            print(text)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    tools = {"demo": "demo", "bench": "bench", "bench-read": "readbench", "bench-scale": "scalebench",
             "bench-batch": "batchbench", "figures": "figures"}
    if args.command in tools:
        importlib.import_module(f".tools.{tools[args.command]}", __package__).main(rest)
        return 0
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return run(args) or 0
    except (OSError, ValueError, KeyError, TypeError, ImportError) as error:
        print(f"xr-inr {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
