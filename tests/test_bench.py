import ctypes
import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from xr_inr import cli
from xr_inr.tools import baselines, bench

RECORD_KEYS = {
    "codec", "dataset", "shape", "dtype", "target_bpppb", "bpppb", "nbytes", "psnr", "psnr_band_mean",
    "sam_deg", "max_abs_err", "encode_s", "decode_s", "peak_rss_mb", "decode_peak_rss_mb", "decode_rss_growth_mb",
    "rss_base_mb",
    "rss_method", "params", "status", "message",
}


def test_bench_cli_writes_the_three_outputs(tmp_path, shared_dataset):
    data = ",".join(str(shared_dataset(name)) for name in ("jasper_ridge_100x100x198.npz", "samson_95x95x156.npz"))
    out = tmp_path / "results"
    assert cli.main(["bench", "--data", data, "--crop", "32x32x12", "--bpppb", "3",
                     "--codecs", "pca-dct,jpeg2000", "--out", str(out)]) == 0

    document = json.loads((out / "results.json").read_text())
    runs = document["runs"]
    assert document["schema_version"] == 1 and document["settings"]["bpppb"] == [3.0]
    assert len(runs) == 2 * 2
    assert {run["dataset"] for run in runs} == {"jasper_ridge_100x100x198", "samson_95x95x156"}
    for run in runs:
        assert RECORD_KEYS <= set(run)
        assert run["shape"] == [12, 32, 32]
        assert run["status"] == "ok", run["message"]
        assert 2.5 < run["bpppb"] <= 3
        assert run["bpppb"] == pytest.approx(8 * run["nbytes"] / (12 * 32 * 32))
        assert run["psnr"] > 30 and run["sam_deg"] >= 0 and run["encode_s"] > 0
        assert run["peak_rss_mb"] > 10 and run["decode_peak_rss_mb"] > 10 and run["decode_s"] > 0

    table = (out / "results.md").read_text()
    assert "## jasper_ridge_100x100x198 (12×32×32, uint16)" in table
    assert table.count("| pca-dct | 3 |") == 2 and table.count("| jpeg2000 | 3 |") == 2
    summary = table.split("# Every run")[0]
    jasper = next(r for r in runs if r["dataset"] == "jasper_ridge_100x100x198" and r["codec"] == "pca-dct")
    assert f"| pca-dct | {jasper['psnr']:.2f} / {jasper['sam_deg']:.2f} |" in summary
    assert (out / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "speed.png").exists()  # drawn against pca-jpeg2000-shared, which did not run


def test_speed_figure_is_drawn_when_the_reference_ran(tmp_path):
    def record(codec, psnr, encode_s):
        return {"codec": codec, "dataset": "cube", "target_bpppb": 0.1, "status": "ok", "bpppb": 0.1,
                "psnr": psnr, "encode_s": encode_s, "decode_s": 0.01}

    bench.plot_figures([record("pca-jpeg2000-shared", 40.0, 1.0), record("inr@fast", 41.0, 5.0),
                        record("inr", 42.0, 20.0)], tmp_path)
    assert (tmp_path / "rd.png").read_bytes()[:8] == (tmp_path / "speed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _Allocating:
    """A fake codec whose encode holds about 200 MB, and keeps 100 MB of it; its decode holds about 50 MB."""

    name = "allocating"

    def encode_at_rate(self, cube, target_bpppb):
        block = np.ones(200 * 2**20 // 8)
        self.kept = block[: 100 * 2**20 // 8].copy()  # still held when the decode starts
        data = bytes(16) if block.sum() else b""
        return baselines.EncodedResult(self.name, data, cube.shape, target_bpppb)

    def decode(self, data):
        return np.zeros((2, 2, 2)) + np.ones(50 * 2**20 // 8).sum()


def test_workers_run_one_openmp_thread_unless_told(monkeypatch):
    """Encodes are timed on one torch and BLAS thread, as a Dask task fits, unless OMP_NUM_THREADS
    says otherwise; the results record it and the CPU."""
    monkeypatch.setenv("OMP_NUM_THREADS", "4")  # restored after the test, set or not before it
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert bench._in_worker(os.getenv, "OMP_NUM_THREADS") == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert bench._in_worker(os.getenv, "OMP_NUM_THREADS") == "2"
    environment = bench._environment()
    assert environment["omp_num_threads"] == "2" and environment["cpu"]


def test_peak_memory_of_the_encode_and_of_a_decode_are_measured(monkeypatch):
    monkeypatch.setitem(baselines.BASELINES, "allocating", _Allocating())
    outcome = bench._timed_run("allocating", np.zeros((2, 2, 2)), 1.0, {})
    assert outcome["status"] == "ok" and outcome["data"] == bytes(16)
    timing = bench._decode_timings({"allocating": outcome["data"]})["allocating"]
    assert timing["decode_s"] > 0
    if outcome["rss_method"] == "vmhwm-reset":
        assert outcome["peak_rss_mb"] - outcome["rss_base_mb"] > 150
        assert 40 < timing["decode_rss_growth_mb"] < 70, platform.release()  # the decode's own 50 MB
    else:
        assert outcome["peak_rss_mb"] > 150


REUSING_DECODE = """
import ctypes, sys
import numpy as np
from xr_inr.tools import baselines, bench

ctypes.CDLL(None).mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD: the 5 MB arrays below come from the heap
left_behind = []

class Reusing:
    name = "reusing"

    def decode(self, data):
        parts = [np.ones(5 * 2**20 // 8) for _ in range(10)]
        left_behind.append(np.ones(2**17))  # 1 MB above them in the heap: freed, they stay with the process
        return sum(part.sum() for part in parts)

baselines.BASELINES["reusing"] = Reusing()
print(bench._decode_timings({"reusing": b""})["reusing"]["decode_rss_growth_mb"])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL(None), "mallopt"),
                    reason="glibc and /proc/self/clear_refs")
def test_a_decode_in_pages_an_earlier_decode_freed_is_measured():
    result = subprocess.run([sys.executable, "-c", REUSING_DECODE], capture_output=True, text=True, check=True)
    assert 40 < float(result.stdout) < 70  # its 50 MB, not the 0 MB of new pages


def test_unreachable_target_record(jasper_cube):
    cube = jasper_cube[:12, :32, :32]
    outcome = bench._guarded_run("jpeg2000", cube, 0.01, {})
    record = bench._record("jpeg2000", "jasper", cube, 0.01, outcome)
    assert record["status"] == "unreachable" and record["min_bpppb"] > 0.01
    assert record["psnr"] is None and record["bpppb"] is None
    assert "unreachable" in record["message"]


def test_over_budget_stream_is_not_ok():
    cube = np.arange(8, dtype=np.uint16).reshape(2, 2, 2)
    outcome = {"status": "ok", "message": "", "nbytes": 4, "decoded": cube, "params": {},
               **{key: 0.0 for key in bench._RUN_KEYS}}
    record = bench._record("inr", "tiny", cube, 1.0, outcome)
    assert record["bpppb"] == 4.0 and record["status"] == "unreachable"
    assert "over the 1 target" in record["message"]
    assert record["psnr"] == np.inf


def test_codec_names_and_crop():
    assert set(baselines.BASELINES) <= set(bench.available_codecs())
    assert bench.make_codec("inr-siren", {"steps": 3}).options == {"steps": 3, "method": "siren"}
    assert bench.make_codec("inr@fast").options == {"effort": "fast"}
    assert bench.make_codec("inr-siren@best").options == {"method": "siren", "effort": "best"}
    with pytest.raises(ValueError, match="unknown effort"):
        bench.make_codec("inr@quick")
    with pytest.raises(ValueError, match="unknown codec"):
        bench.make_codec("nope")
    with pytest.raises(ValueError, match="HxW"):
        bench._crop(None, "12")


def test_json_has_no_infinity():
    assert bench.json_safe({"a": [np.float64(np.inf), 1.5], "b": np.int64(3)}) == {"a": [None, 1.5], "b": 3}


def test_inr_through_the_bench(tmp_path, shared_dataset):
    pytest.importorskip("torch")
    pytest.importorskip("torch")
    cube = np.load(shared_dataset("jasper_ridge_100x100x198.npz"))["cube"][:12, :12, :16].transpose(2, 0, 1).copy()
    records = bench.run_benchmark({"jasper": cube}, ["inr"], [1.0], {"steps": 5, "search_steps": 0}, log=lambda _: None)
    (record,) = records
    assert record["status"] in {"ok", "unreachable"}, record["message"]
    assert record["bpppb"] == pytest.approx(8 * record["nbytes"] / cube.size)
    assert record["params"]["steps"] == 5


def test_partial_results_are_saved_and_reports_merge(tmp_path, shared_dataset):
    data = str(shared_dataset("paviaU_sub_50x50x103.npz"))
    saved_counts = []
    cubes = bench._load_cubes([data], "16x16x8", False)
    bench.run_benchmark(cubes, ["pca-dct"], [2.0, 4.0], log=lambda _: None,
                        on_record=lambda records: saved_counts.append(len(records)))
    assert saved_counts == [1, 2, 2]  # after every run (an interrupted benchmark keeps its runs), and decode times

    for name, rate in (("a", "2"), ("b", "4")):
        cli.main(["bench", "--data", data, "--crop", "16x16x8", "--bpppb", rate, "--codecs", "pca-dct",
                  "--out", str(tmp_path / name)])
    merged = tmp_path / "merged"
    cli.main(["bench", "--report", f"{tmp_path / 'a' / 'results.json'},{tmp_path / 'b' / 'results.json'}",
              "--out", str(merged)])
    document = json.loads((merged / "results.json").read_text())
    assert [run["target_bpppb"] for run in document["runs"]] == [2.0, 4.0]
    assert len(document["settings"]) == 2
    assert (merged / "results.md").read_text().split("# Every run")[1].count("| pca-dct |") == 2
    assert (merged / "rd.png").exists()
