"""Rate-distortion benchmark: codecs x target rates x datasets.

Each encode (and one decode, for the metrics) runs in a fresh worker process
(multiprocessing "spawn"), so its time and memory are its own: peak memory is
the worker's peak resident set size (Linux VmHWM, reset through
``/proc/self/clear_refs``; it includes the interpreter, imported libraries and
the input cube, ``rss_base_mb``; elsewhere ``ru_maxrss``, see ``rss_method``).
Decode times and memory come from one more worker per cube and rate that
decodes every codec's stream in turn (:func:`_decode_timings`), so the
machine's load falls on the codecs alike.

The INR's worker imports torch and the fitting code before the clock starts:
a Dask worker pays that once, not per chunk. Workers run one OpenMP (torch and
BLAS) thread unless ``OMP_NUM_THREADS`` says otherwise (:data:`WORKER_THREADS`).

Writes ``results.json``, ``results.md``, ``rd.png`` and ``speed.png`` (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import ctypes
import datetime
import json
import math
import multiprocessing
import os
import platform
import resource
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

from .. import metrics
from ..core import entropy
from ..methods.grid import arm
from ..methods.grid import model as grid_model
from . import baselines

__all__ = [
    "INR_PREFIX",
    "InrBenchCodec",
    "add_arguments",
    "available_codecs",
    "json_safe",
    "main",
    "make_codec",
    "plot_figures",
    "plot_rd",
    "run",
    "run_benchmark",
    "write_markdown",
]

INR_PREFIX = "inr"
DECODE_REPEATS = 7
"""Rounds of :func:`_decode_timings`: ``decode_s`` is a codec's fastest decode (a decode takes
milliseconds; one alone measures the machine's noise as much as the codec)."""


ARCHITECTURE_KEYS = ("method", "components", "channels", "hidden", "depth", "width")
"""What ``xr_inr.inspect`` says of a stream's model, recorded in a run's ``params``."""


class InrBenchCodec:
    """The INR codec behind the baselines' interface (``encode_at_rate`` / ``decode``).

    Name "inr" uses INRCodec's default method and effort; "inr-<method>" passes ``method``,
    a suffix "@<effort>" (``inr@fast``, ``inr-siren@best``) ``effort``.
    ``options`` go to ``INRCodec`` as keyword arguments (steps, lr, ...).
    """

    def __init__(self, name: str = INR_PREFIX, **options):
        self.name = name
        self.options = dict(options)
        name, _, effort = name.partition("@")
        method = name[len(INR_PREFIX) + 1 :]
        if method:
            self.options["method"] = method
        if effort:
            self.options["effort"] = effort

    def warm_up(self) -> None:
        """Import what fitting imports (torch, the fitting code), so that an encode's time is the
        fit's: a worker process pays this once, not per chunk."""
        from ..methods.grid import fitting  # noqa: F401
        from ..methods.siren import fitting as siren_fitting  # noqa: F401

    def encode_at_rate(self, cube: np.ndarray, target_bpppb: float) -> baselines.EncodedResult:
        from ..core.codec import INRCodec
        from ..core.decode import inspect

        data = INRCodec(bpppb=target_bpppb, band_axis=0, **self.options).encode(cube)
        info = inspect(data)
        chosen = {key: info[key] for key in ARCHITECTURE_KEYS if key in info}
        return baselines.EncodedResult(self.name, data, tuple(cube.shape), target_bpppb,
                                       {**self.options, **chosen})

    def decode(self, data: bytes) -> np.ndarray:
        from ..core.codec import INRCodec

        return INRCodec().decode(data)


def _inr_available() -> bool:
    try:
        from ..core.codec import INRCodec  # noqa: F401
    except ImportError:
        return False
    return True


def available_codecs() -> list[str]:
    """All baseline names, plus "inr" when the codec imports."""
    return list(baselines.BASELINES) + ([INR_PREFIX] if _inr_available() else [])


def make_codec(name: str, inr_options: dict | None = None):
    """A codec object with ``encode_at_rate(cube, target_bpppb)`` and ``decode(data)``."""
    if name in baselines.BASELINES:
        return baselines.BASELINES[name]
    if name.partition("@")[0] == INR_PREFIX or name.startswith(INR_PREFIX + "-"):
        codec = InrBenchCodec(name, **(inr_options or {}))
        from ..core.codec import INRCodec

        INRCodec(**codec.options)  # an unknown method or effort fails here
        return codec
    raise ValueError(f"unknown codec {name!r}; known: {available_codecs()}, inr-<method> and inr[-<method>]@<effort>")


# --------------------------------------------------------------------------- worker side


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


_LIBC = ctypes.CDLL(None)


def _reset_peak() -> bool:
    """Hand freed heap memory back to the system, then reset this process's peak RSS (VmHWM).

    Without the first step a measured call reuses pages an earlier call freed, and reads as
    needing nothing. False where Linux's clear_refs is unavailable."""
    if hasattr(_LIBC, "malloc_trim"):  # glibc
        _LIBC.malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _small_pages():
    """New memory of this process in 4 KiB pages, not transparent huge pages, for the block.

    Kernels before Linux 6.2 add a task's page faults to its RSS in batches of 64 faults: a
    decode that faults 50 MiB in 2 MiB pages can end before its RSS (and so its peak) moves."""
    prctl = getattr(_LIBC, "prctl", None)
    # PR_GET_THP_DISABLE (42) is 0 while huge pages are allowed; PR_SET_THP_DISABLE is 41
    off = prctl is not None and prctl(42, 0, 0, 0, 0) == 0 and prctl(41, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        if off:
            prctl(41, 0, 0, 0, 0)


def _peak_mb(resettable: bool) -> float:
    if resettable:
        return _status_kib("VmHWM") / 1024
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _timed_run(codec_name: str, cube: np.ndarray, target_bpppb: float, inr_options: dict) -> dict:
    """Encode then decode once in this (worker) process: encode time, memory, the stream and the
    decoded cube (decode times come from :func:`_decode_timings`)."""
    codec = make_codec(codec_name, inr_options)
    if hasattr(codec, "warm_up"):
        codec.warm_up()
    resettable = _reset_peak()
    base_mb = _status_kib("VmRSS") / 1024 if resettable else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        try:
            result = codec.encode_at_rate(cube, target_bpppb)
        except baselines.TargetUnreachable as error:
            return {"status": "unreachable", "message": str(error), "min_bpppb": error.min_bpppb}
        encode_s = time.perf_counter() - start
        decoded = codec.decode(result.data)
    return {
        "status": "ok",
        "message": "; ".join(str(w.message) for w in caught),
        "nbytes": len(result.data),
        "params": result.params,
        "encode_s": encode_s,
        "peak_rss_mb": _peak_mb(resettable),
        "rss_base_mb": base_mb,
        "rss_method": "vmhwm-reset" if resettable else "ru_maxrss",
        "decoded": decoded,
        "data": result.data,
    }


def _decode_timings(streams: dict[str, bytes]) -> dict[str, dict]:
    """Decode time and memory of each codec's stream, in this fresh (worker) process.

    After one warm-up decode each, the streams are decoded in turn, DECODE_REPEATS rounds (the
    order reversed every other round): the machine's load falls on every codec alike, and each
    codec's time is its fastest. Memory: each codec's peak RSS during one more decode, and that
    peak over the RSS just before it (what decoding needs)."""
    codecs = {name: make_codec(name) for name in streams}
    for name, data in streams.items():
        codecs[name].decode(data)
    best = dict.fromkeys(streams, math.inf)
    order = list(streams)
    for round_ in range(DECODE_REPEATS):
        for name in order if round_ % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            codecs[name].decode(streams[name])
            best[name] = min(best[name], time.perf_counter() - start)
    out = {}
    for name, data in streams.items():
        with _small_pages():
            resettable = _reset_peak()
            before = _status_kib("VmRSS") / 1024 if resettable else None
            codecs[name].decode(data)
            peak = _peak_mb(resettable)
        out[name] = {"decode_s": best[name], "decode_peak_rss_mb": peak,
                     "decode_rss_growth_mb": None if before is None else peak - before}
    return out


def _guarded_run(codec_name: str, cube: np.ndarray, target_bpppb: float, inr_options: dict) -> dict:
    try:
        return _timed_run(codec_name, cube, target_bpppb, inr_options)
    except Exception as error:  # reported in the results, not raised: one failure must not stop the run
        return {"status": "error", "message": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}


# --------------------------------------------------------------------------- parent side

_METRIC_KEYS = ("psnr", "psnr_band_mean", "sam_deg", "max_abs_err")
_RUN_KEYS = ("encode_s", "decode_s", "peak_rss_mb", "decode_peak_rss_mb", "decode_rss_growth_mb", "rss_base_mb",
             "rss_method")


def _record(codec: str, dataset: str, cube: np.ndarray, target: float, outcome: dict) -> dict:
    record = {
        "codec": codec,
        "dataset": dataset,
        "shape": list(cube.shape),
        "dtype": str(cube.dtype),
        "target_bpppb": target,
        "status": outcome["status"],
        "message": outcome.get("message", ""),
        "bpppb": None,
        "nbytes": None,
        **{key: None for key in _METRIC_KEYS + _RUN_KEYS},
        "params": outcome.get("params", {}),
    }
    if outcome["status"] == "unreachable":
        record["min_bpppb"] = outcome["min_bpppb"]
    if outcome["status"] == "error" and "traceback" in outcome:
        record["traceback"] = outcome["traceback"]
    if outcome["status"] != "ok":
        return record
    record["nbytes"] = outcome["nbytes"]
    record["bpppb"] = 8 * outcome["nbytes"] / cube.size
    record.update({key: outcome.get(key) for key in _RUN_KEYS})  # decode times and memory: added later
    record.update(metrics.summary(cube, outcome["decoded"]))
    if record["bpppb"] > target:
        record["status"] = "unreachable"
        record["message"] = (record["message"] + "; " if record["message"] else "") + (
            f"stream of {record['bpppb']:.4g} bpppb is over the {target:g} target"
        )
    return record


def _run_isolated(codec: str, cube: np.ndarray, target: float, inr_options: dict) -> dict:
    """One run in a fresh spawned process; a crashed worker becomes an "error" outcome."""
    return _in_worker(_guarded_run, codec, cube, target, inr_options)


WORKER_THREADS = "1"
"""``OMP_NUM_THREADS`` of the worker processes when the caller's environment has none: one
thread, as a Dask task fits (with the default, torch and BLAS took both cores of the 2-core machine in
each of two benchmarks side by side, and the encodes took 3x as long)."""


def _in_worker(function, *args) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", WORKER_THREADS)  # read by the spawned worker as it starts
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        try:
            return pool.submit(function, *args).result()
        except concurrent.futures.process.BrokenProcessPool as error:
            return {"status": "error", "message": f"worker process died: {error}"}


def json_safe(value):
    """Non-finite floats become null (JSON has no inf/NaN); numpy scalars become Python ones; keys strings."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def cpu_model() -> str:
    """The CPU's model name (Linux), else what ``platform`` knows."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _environment() -> dict:
    import imagecodecs
    import scipy

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),  # float results (so streams) can differ between CPUs
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", WORKER_THREADS),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "imagecodecs": imagecodecs.__version__,
        "compiled_arm": arm.FAST_COMPILED,  # the grid decoder's ARM in C (AVX2 + FMA), else numpy
        "compiled_synthesis": grid_model._compiled is not None,  # its elementwise synthesis steps in C
        "compiled_range_decoder": entropy._compiled is not None,  # its range decoding in C, else constriction
    }


def _crop(da, crop: str | None):
    """Top-left crop "HxW" or "HxWxB" (first B bands)."""
    if not crop:
        return da
    sizes = [int(part) for part in crop.lower().split("x")]
    if len(sizes) not in (2, 3) or min(sizes) < 1:
        raise ValueError(f"--crop expects HxW or HxWxB, got {crop!r}")
    selection = {"y": slice(0, sizes[0]), "x": slice(0, sizes[1])}
    if len(sizes) == 3:
        selection["band"] = slice(0, sizes[2])
    return da.isel(selection)


def _load_cubes(paths: list[str], crop: str | None, drop_constant: bool) -> dict[str, np.ndarray]:
    from . import datasets  # imports xarray: kept out of the worker processes

    cubes = {}
    for path in paths:
        da = datasets.load(path)
        if drop_constant:
            da = datasets.drop_constant_bands(da)
        da = _crop(da, crop)
        label = da.attrs.get("name", Path(path).stem)
        while label in cubes:
            label += "'"
        cubes[label] = np.ascontiguousarray(da.values)
    return cubes


def run_benchmark(
    cubes: dict[str, np.ndarray],
    codecs: list[str],
    rates: list[float],
    inr_options: dict | None = None,
    log=print,
    on_record=None,
) -> list[dict]:
    """One record per (dataset, codec, rate), each run in its own worker process.

    ``on_record(records)`` is called after every run (to save partial results).
    """
    records = []
    for dataset, cube in cubes.items():
        streams = {target: {} for target in rates}
        for codec in codecs:
            for target in rates:
                outcome = _run_isolated(codec, cube, target, inr_options or {})
                record = _record(codec, dataset, cube, target, outcome)
                records.append(record)
                if record["status"] == "ok":
                    streams[target][codec] = (record, outcome["data"])
                    summary = f"{record['bpppb']:.4f} bpppb  {record['psnr']:.2f} dB  {record['encode_s']:.1f} s"
                else:
                    summary = record["message"]
                log(f"{dataset} {codec} @{target:g}: {record['status']}  {summary}")
                if on_record is not None:
                    on_record(records)
        for target, done in streams.items():  # decode times: every codec's stream of a cell in one worker
            try:
                timings = _in_worker(_decode_timings, {codec: data for codec, (_, data) in done.items()}) if done else {}
            except Exception as error:  # all these streams decoded once already: not expected
                log(f"{dataset} @{target:g}: decode timing failed: {type(error).__name__}: {error}")
                timings = {}
            for codec, (record, _) in done.items():
                record.update(timings.get(codec, {}))
            log(f"{dataset} @{target:g} decode s: " + ", ".join(
                f"{codec} {_cell(record['decode_s'], 4)}" for codec, (record, _) in done.items()))
        if on_record is not None:
            on_record(records)
    return records


def _cell(value, digits: int) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}"


def write_markdown(records: list[dict], path: Path) -> None:
    """A summary table (PSNR / SAM per codec and target), then every measurement, per dataset."""
    datasets = list(dict.fromkeys(record["dataset"] for record in records))
    lines = ["# Summary: PSNR dB / mean SAM ° at each target rate (– : target unreachable)", ""]
    for dataset in datasets:
        lines += _summary_table(dataset, [r for r in records if r["dataset"] == dataset])
    lines += ["# Every run", ""]
    header = (
        "| codec | target | bpppb | PSNR dB | band-mean PSNR dB | SAM ° | max abs err "
        "| encode s | decode s | peak RSS MB | status |"
    )
    for dataset in datasets:
        rows = [record for record in records if record["dataset"] == dataset]
        lines += [f"## {_dataset_title(dataset, rows)}", "", header, "|" + "---|" * 11]
        for r in rows:
            status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['message']}".replace("|", "/")
            lines.append(
                f"| {r['codec']} | {r['target_bpppb']:g} | {_cell(r['bpppb'], 4)} | {_cell(r['psnr'], 2)} "
                f"| {_cell(r['psnr_band_mean'], 2)} | {_cell(r['sam_deg'], 3)} | {_cell(r['max_abs_err'], 4)} "
                f"| {_cell(r['encode_s'], 2)} | {_cell(r['decode_s'], 2)} | {_cell(r['peak_rss_mb'], 0)} | {status} |"
            )
        lines.append("")
    path.write_text("\n".join(lines))


def _dataset_title(dataset: str, rows: list[dict]) -> str:
    return f"{dataset} ({'×'.join(map(str, rows[0]['shape']))}, {rows[0]['dtype']})"


def _summary_table(dataset: str, rows: list[dict]) -> list[str]:
    """Codecs down, target rates across; each cell "PSNR / SAM" of an "ok" run, else "–"."""
    targets = sorted({r["target_bpppb"] for r in rows})
    lines = [f"## {_dataset_title(dataset, rows)}", "",
             "| codec | " + " | ".join(f"{t:g}" for t in targets) + " |", "|---" * (len(targets) + 1) + "|"]
    for codec in dict.fromkeys(r["codec"] for r in rows):
        cells = []
        for target in targets:
            run = next((r for r in rows if r["codec"] == codec and r["target_bpppb"] == target), None)
            ok = run is not None and run["status"] == "ok"
            cells.append(f"{_cell(run['psnr'], 2)} / {_cell(run['sam_deg'], 2)}" if ok else "–")
        lines.append(f"| {codec} | " + " | ".join(cells) + " |")
    return lines + [""]


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def plot_figures(records: list[dict], out: Path) -> None:
    """``rd.png`` and, where ``pca-jpeg2000-shared`` ran, ``speed.png``: each codec's encode and
    decode time as a ratio to it against its PSNR margin over it, one point per cell
    (:func:`xr_inr.tools.figures.plot_speed`; efforts side by side when several ran)."""
    from . import figures

    plot_rd(records, out / "rd.png")
    if any(r["codec"] == figures.REFERENCE and r["status"] == "ok" for r in records):
        ok = [r for r in records if r["status"] == "ok"]
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        figures.plot_speed([{"label": "this run", "created": created, "runs": ok}], out / "speed.png")


def plot_rd(records: list[dict], path: Path) -> None:
    """PSNR against bpppb, one line per codec, one panel per dataset ("ok" runs only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    names = list(dict.fromkeys(record["dataset"] for record in records))
    colours = {codec: f"C{i % 10}" for i, codec in enumerate(dict.fromkeys(r["codec"] for r in records))}
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 4 * rows), squeeze=False)
    for axis, dataset in zip(axes.flat, names):
        ok = [r for r in records if r["dataset"] == dataset and r["status"] == "ok" and _finite(r["psnr"])]
        for codec in dict.fromkeys(r["codec"] for r in ok):
            points = sorted((r["bpppb"], r["psnr"]) for r in ok if r["codec"] == codec)
            axis.plot(*zip(*points), marker="o", label=codec, color=colours[codec])
        axis.set_xscale("log")
        axis.set_xticks(sorted({r["target_bpppb"] for r in records if r["dataset"] == dataset}))
        axis.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axis.minorticks_off()
        axis.set_title(dataset)
        axis.set_xlabel("bits per pixel per band")
        axis.set_ylabel("PSNR (dB)")
        axis.grid(True, which="both", alpha=0.3)
        if ok:
            axis.legend(fontsize="small")
    for axis in list(axes.flat)[len(names) :]:
        axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _parse_option(text: str) -> tuple[str, object]:
    key, separator, value = text.partition("=")
    if not separator:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.replace("-", "_"), value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="cube files or registry scene names, comma-separated")
    parser.add_argument(
        "--report", help="instead of running: merge these results.json files (comma-separated) into --out"
    )
    parser.add_argument("--bpppb", default="0.05,0.1,0.2", help="target rates, comma-separated (default 0.05,0.1,0.2)")
    parser.add_argument("--codecs", default="all", help="'all' or comma-separated names (baselines, inr, inr-<method>, "
                        "inr@<effort>, e.g. inr@fast,inr,inr@best)")
    parser.add_argument("--out", default="results", type=Path, help="output folder (default results/)")
    parser.add_argument("--drop-constant-bands", action="store_true", help="drop zeroed/constant bands first")
    parser.add_argument("--crop", help="top-left crop HxW or HxWxB (first B bands), for quick runs")
    parser.add_argument("--inr-steps", type=int, help="Adam steps of the INR's final fit")
    parser.add_argument(
        "--inr-option", action="append", type=_parse_option, default=[], metavar="KEY=VALUE",
        help="extra INRCodec keyword argument (JSON value), repeatable, e.g. --inr-option lr=1e-3",
    )


def run(args: argparse.Namespace) -> list[dict]:
    """The ``bench`` subcommand: run (or merge earlier runs), writing results.json, results.md and rd.png.

    results.json and results.md are rewritten after every run, so an
    interrupted benchmark keeps what it measured.
    """
    if args.report:
        return _merge_reports([Path(p) for p in args.report.split(",")], args.out)
    if not args.data:
        raise SystemExit("xr-inr bench: --data is required (or --report)")
    codecs = available_codecs() if args.codecs == "all" else [name.strip() for name in args.codecs.split(",")]
    for name in codecs:
        make_codec(name)  # unknown names fail before any work
    rates = [float(rate) for rate in args.bpppb.split(",")]
    inr_options = dict(args.inr_option)
    if args.inr_steps is not None:
        inr_options["steps"] = args.inr_steps
    cubes = _load_cubes(args.data.split(","), args.crop, args.drop_constant_bands)
    settings = {
        "data": args.data.split(","),
        "bpppb": rates,
        "codecs": codecs,
        "crop": args.crop,
        "drop_constant_bands": args.drop_constant_bands,
        "inr_options": inr_options,
    }
    args.out.mkdir(parents=True, exist_ok=True)

    def save(records: list[dict]) -> None:
        _write_results({"settings": settings, "environment": _environment(), "runs": records}, args.out)

    records = run_benchmark(
        cubes, codecs, rates, inr_options, log=lambda line: print(line, file=sys.stderr), on_record=save
    )
    save(records)
    plot_figures(records, args.out)
    return records


def _write_results(document: dict, out: Path) -> None:
    document = {
        "schema_version": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **document,
    }
    (out / "results.json").write_text(json.dumps(json_safe(document), indent=1, allow_nan=False))
    write_markdown(document["runs"], out / "results.md")


def _merge_reports(paths: list[Path], out: Path) -> list[dict]:
    """One results.json/.md/rd.png from several runs' results.json (settings and environments kept as lists)."""
    documents = [json.loads(path.read_text()) for path in paths]
    records = [record for document in documents for record in document["runs"]]
    out.mkdir(parents=True, exist_ok=True)
    _write_results(
        {
            "settings": [document["settings"] for document in documents],
            "environment": [document["environment"] for document in documents],
            "runs": records,
        },
        out,
    )
    plot_figures(records, out)
    return records


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="xr-inr bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
