"""``xr-inr bench-scale`` (xr_inr.tools.scalebench) on a tiny configuration, and what it relies on:
fit tasks that pickle without data, chunks read one at a time, only streams coming back."""

import json
import pickle
from pathlib import Path

import dask.array as dsa
import numpy as np
import pytest
import xarray as xr

from xr_inr import cli
from xr_inr.tools import scalebench
from xr_inr.xarray_zarr import parallel
from xr_inr.xarray_zarr.accessor import plan_fits


@pytest.fixture(scope="module")
def base(jasper_crop):
    return jasper_crop.astype(np.float32)  # (40 bands, 40, 40)


def test_the_source_is_the_cube_tiled_by_reflection_in_chunks(base, tmp_path):
    info = scalebench.write_source(tmp_path / "s.zarr", base, (100, 90), 50, 32)
    assert info["shape"] == [50, 100, 90] and info["chunks"] == [50, 32, 32] and info["n_chunks"] == 4 * 3
    cube = xr.open_zarr(tmp_path / "s.zarr")["cube"]
    assert cube.dims == ("band", "y", "x") and cube.dtype == np.float32
    assert cube.data.chunksize == (50, 32, 32)  # read chunk by chunk
    values = cube.values
    np.testing.assert_array_equal(values[:40, :40, :40], base)
    np.testing.assert_array_equal(values[40:50, :40, :40], base[::-1][:10])  # bands folded back, no seam
    np.testing.assert_array_equal(values[:40, 40:80, :40], base[:, ::-1])
    np.testing.assert_array_equal(values[:40, 80:100, 40:80], base[:, :20, ::-1])
    assert info["stored_mb"] < info["raw_mb"]  # zstd


def test_sizes_parse():
    assert scalebench._size("1024x512") == (1024, 512) and scalebench._size("256") == (256, 256)
    with pytest.raises(Exception, match="HEIGHTxWIDTH"):
        scalebench._size("big")


def test_fit_tasks_hold_no_data_and_read_each_chunk_alone(base, tmp_path):
    """What lets a cluster of other machines run the fits: the tasks pickle (plain pickle) to a
    few kB whatever the cube, name the source, not its values; to_zarr reads one chunk per read
    (once to fingerprint the input, once to fit it) and gets only bytes back from the fits."""
    scalebench.write_source(tmp_path / "s.zarr", base, (64, 64), 16, 32)
    cube = xr.open_zarr(tmp_path / "s.zarr")["cube"]
    job = plan_fits({"cube": cube}, 1.0, steps=2)[0]
    graph = dict(job.fit_tasks([[(0, 0, 0)]])[0].__dask_graph__())
    assert len(pickle.dumps(graph)) < cube.nbytes / 20

    class Recording:  # an array that records the size of every read
        def __init__(self, values):
            self.values, self.shape, self.dtype, self.ndim, self.reads = values, values.shape, values.dtype, 3, []

        def __getitem__(self, key):
            out = self.values[key]
            self.reads.append(out.size)
            return out

    source = Recording(cube.values)
    lazy = xr.DataArray(dsa.from_array(source, chunks=(16, 32, 32), name="recording"), dims=("band", "y", "x"))
    returned = []
    original = parallel.run

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        returned.extend(result for task in out for result in task)
        return out

    parallel.run = spy
    try:
        lazy.inr.to_zarr(tmp_path / "out.zarr", 1.0, steps=2, progress=False, scheduler="threads")
    finally:
        parallel.run = original
    reads = [n for n in source.reads if n > 0]
    assert max(reads) == 16 * 32 * 32 and len(reads) == 2 * 4
    assert len(returned) == 4 and all(isinstance(r[0], bytes) for r in returned)  # (stream, quality, warnings)


def test_a_tiny_benchmark_reports_its_fields(jasper_crop, tmp_path, monkeypatch, capsys):
    """Scaling with the threaded scheduler (1 thread), memory on a LocalCluster of one worker process."""
    pytest.importorskip("distributed")
    data = tmp_path / "crop.npz"
    np.savez(data, cube=jasper_crop.transpose(1, 2, 0))  # the shared layout: (y, x, band)
    out = tmp_path / "report.json"
    report = scalebench.main(["--data", str(data), "--size", "32x32", "--no-compare", "--large-chunk", "0",
                              "--bands", "16", "--chunk", "16",
                              "--scale-size", "32x64", "--steps", "2", "--scale-steps", "2", "--bpppb", "1",
                              "--schedulers", "threads", "--workers", "1", "--tmp", str(tmp_path),
                              "--memory-workers", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["machine"]["cpu_count"] >= 1 and report["date"].startswith("20")
    assert report["settings"]["bands"] == 16 and report["sources"]["source-32x64x16-16.zarr"]["n_chunks"] == 8
    (one,) = report["scaling"]
    assert (one["scheduler"], one["workers"]) == ("threads", 1)
    assert one["n_chunks"] == 8 and one["shape"] == [16, 32, 64] and one["verified"] and one["speedup"] == 1
    assert 0 < one["fingerprint_s"] < one["seconds"] and one["client_rss"]["peak_rss_mb"] > 50
    assert len(one["fit_s"]) == 8 and 0 < one["fit_s_mean"] < one["seconds"] and 0 < one["cores_busy"] <= 2.2
    assert one["cpu_s"]["client"] > 0 and one["cpu_s"]["workers"] == []
    (memory,) = report["memory"]
    assert memory["scheduler"] == "distributed" and memory["workers"] == 1 and memory["verified"]
    assert memory["n_chunks"] == 4 and memory["fits_per_worker"] == [4]  # every fit on the worker process
    (worker,) = memory["worker_rss"]
    assert worker["pid"] != memory["client_rss"]["pid"] and worker["peak_rss_mb"] > 50
    assert len(memory["fit_s"]) == 4 and len(memory["cpu_s"]["workers"]) == 1 and memory["cpu_s"]["workers"][0] > 0
    assert memory["startup_s"] > 0
    printed = capsys.readouterr().out
    assert "| threads | 1 |" in printed and "| distributed | 1 |" in printed and str(out) in printed


def test_speedup_is_the_one_worker_time_over_this_one(monkeypatch, tmp_path):
    jobs = []

    def run_child(job):
        jobs.append(job)
        return {"scheduler": job["scheduler"], "workers": job["workers"], "seconds": 8.0 / job["workers"]}

    monkeypatch.setattr(scalebench, "run_child", run_child)
    rows = scalebench.scaling("source.zarr", tmp_path, schedulers=("threads", "distributed"), workers=(1, 2, 4),
                              bpppb=1, steps=None, effort="fast")
    assert [row["speedup"] for row in rows] == [1, 2, 4, 1, 2, 4]
    assert all(job["effort"] == "fast" and job["steps"] is None for job in jobs)  # the effort's own steps


def test_the_effort_and_its_own_steps_reach_the_runs(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(scalebench, "run", lambda data, **kwargs: seen.update(kwargs) or
                        {"settings": {}, "scaling": [], "memory": [], "seconds": 0.0, "machine": {"cpu_count": 2}})
    monkeypatch.setattr(scalebench, "markdown", lambda report: "")
    scalebench.main(["--effort", "fast", "--scale-steps", "0", "--out", str(tmp_path / "r.json")])
    assert seen["effort"] == "fast" and seen["scale_steps"] is None
    with pytest.raises(SystemExit):
        scalebench.main(["--effort", "quick"])


def test_the_cli_runs_it():
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench-scale", "--help"])
    assert exit_.value.code == 0


def test_bench_batch_times_batched_fits_against_one_at_a_time(tmp_path, capsys):
    from xr_inr.tools.batchbench import chunks_of

    cube = np.arange(2 * 10 * 12).reshape(2, 10, 12)
    chunks = chunks_of(cube, 5, 11)  # 4 tiles, then their flipped and transposed copies
    assert len(chunks) == 11 and np.array_equal(chunks[4], cube[:, 4::-1, :5])
    out = tmp_path / "batch.json"
    fixture = Path(__file__).parent / "fixtures" / "jasper_ridge_crop_40x40x40.npz"
    assert cli.main(["bench-batch", "--data", str(fixture), "--size", "12",
                     "--count", "3", "--batch", "2,3", "--cpu-count", "2", "--device", "cpu", "--steps", "2",
                     "--bpppb", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["count"] == 3 and result["chunk"] == [40, 12, 12] and result["cpu_count"] == 2
    lines = capsys.readouterr().out.splitlines()  # each measurement as it is done (a run cut short keeps them)
    assert [line.split(":")[0] for line in lines[:3]] == ["batch 2", "batch 3", "CPU, one at a time, 1 thread"]
    assert [row["batch"] for row in result["batched"]] == [2, 3]
    assert 20 < result["cpu_median_psnr"] < 80 and set(result["cpu_phases_s"]) == {"setup", "training", "packing"}
    assert 0 < sum(result["cpu_phases_s"].values()) <= result["cpu_one_at_a_time_s"]
    for row in result["batched"]:
        assert row["speedup"] == pytest.approx(3 / row["batched_s"] / (2 / result["cpu_one_at_a_time_s"]))
        assert 20 < row["batched_median_psnr"] < 80 and set(row["batched_phases_s"]) == {"setup", "training", "packing"}
        assert 0 < sum(row["batched_phases_s"].values()) <= row["batched_s"]
    from xr_inr.methods.grid import fitting
    assert fitting.pack_within_budget.__name__ == "pack_within_budget"  # the timers are gone again


MAPPED = """
import ctypes, numpy as np
from xr_inr.xarray_zarr import parallel
libc = ctypes.CDLL(None)
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks "
                                                      "fordblks keepcost").split()]
if not hasattr(libc, "mallinfo2"):
    raise SystemExit("unsupported")
libc.mallinfo2.restype = Info
buffer = np.ones(2 << 20)  # 16 MiB, what a training step allocates and frees
plain = libc.mallinfo2().hblkhd  # bytes in mapped chunks
del buffer
if not parallel.keep_fit_buffers():
    raise SystemExit("unsupported")
buffer = np.ones(2 << 20)
print(plain, libc.mallinfo2().hblkhd)
"""


def test_fit_tasks_keep_their_large_buffers_in_the_heap():
    """Under dask.distributed's MALLOC_TRIM_THRESHOLD_=65536 every large buffer was mapped, faulted in
    and unmapped again (docs/benchmarks.md); keep_fit_buffers, which every fit task runs, keeps them
    in the heap."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}
    run = subprocess.run([sys.executable, "-c", MAPPED], capture_output=True, text=True, env=env)
    if "unsupported" in run.stderr:
        pytest.skip("not glibc 2.33 or later")
    plain, kept = map(int, run.stdout.split())
    assert plain >= 16 << 20 and kept < 16 << 20, (plain, kept)
