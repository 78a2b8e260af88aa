"""Archives that never lie: read checks, verify(), upgrading old format 2 stores, resumable writes, lenient
stored configs, reproducible encodes and the encode input checks (docs/reliability.md).

Fits are tiny (30 Adam steps); damaged chunks are made of constant streams (no fit).
"""

import json
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import dask
import numcodecs
import numpy as np
import pytest
import xarray as xr

import xr_inr
from xr_inr import ChunkError, INRCodec, INRZarrCodec, QualityWarning, cli
from xr_inr.xarray_zarr import parallel
from xr_inr.xarray_zarr.sources import source_of

REPO = Path(__file__).resolve().parent.parent
FAST = dict(steps=30, progress=False)
CHUNKS = {"band": -1, "y": 20, "x": 12}  # 40 x 36 pixels: 2 x 3 = 6 chunks
BPPPB = 1.0


@pytest.fixture(scope="module")
def cube(jasper_crop):
    """20 bands x 40 x 36 pixels of Jasper Ridge, uint16."""
    return xr.DataArray(jasper_crop[::2, :, 4:].copy(), dims=("band", "y", "x"), name="r")


@pytest.fixture(scope="module")
def written(cube, tmp_path_factory):
    """A store written by to_zarr (format 3), and the values it decodes to."""
    path = tmp_path_factory.mktemp("written") / "cube.zarr"
    cube.inr.to_zarr(path, BPPPB, chunks=CHUNKS, **FAST)
    return path, xr_inr.open_zarr(path)["r"].values


@pytest.fixture
def store(written, tmp_path):
    """A copy of the written store, to damage."""
    path = tmp_path / "cube.zarr"
    shutil.copytree(written[0], path)
    return path


def chunk_file(store: Path, index) -> Path:
    return store / "r" / "c" / Path(*map(str, index))


def record(store: Path, index, data: bytes) -> None:
    """Put ``data`` at a chunk and in the manifest, as a writer that stored the wrong stream would."""
    import zarr

    from xr_inr.xarray_zarr.sources import chunk_digest

    chunk_file(store, index).write_bytes(data)
    array = zarr.open_group(store, mode="r+")["r"]
    array.attrs["xr_inr_chunks"] = {**array.attrs["xr_inr_chunks"],
                                    ".".join(map(str, index)): [len(data), chunk_digest(data)]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(store)


def constant_stream(shape, dtype, value) -> bytes:
    return INRCodec().encode(np.full(shape, value, dtype))


# -- 1. no silent loss on read ---------------------------------------------------------


def test_a_written_store_verifies_and_records_its_chunks(written):
    report = xr_inr.verify(written[0], decode=True)
    assert report.ok and report.checked == 6 and not report.unchecked
    assert report.raise_for_problems() is report


def test_a_missing_chunk_is_an_error_naming_variable_and_chunk(store, written):
    chunk_file(store, (0, 1, 2)).unlink()
    with pytest.raises(ChunkError, match=r"variable 'r', chunk \(0, 1, 2\).*missing"):
        xr_inr.open_zarr(store)["r"].values
    report = xr_inr.verify(store)
    assert [(name, index) for name, index, _ in report.missing] == [("r", (0, 1, 2))] and not report.ok
    with pytest.raises(ChunkError, match="1 missing"):
        report.raise_for_problems()
    filled = xr_inr.open_zarr(store, missing="fill")["r"].values  # the documented opt-in
    assert (filled[:, 20:, 24:] == 0).all()
    np.testing.assert_array_equal(filled[:, :20], written[1][:, :20])


def test_swapped_chunks_are_detected(store):
    a, b = chunk_file(store, (0, 0, 0)), chunk_file(store, (0, 0, 1))  # same shape: valid streams both
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    with pytest.raises(ChunkError, match=r"chunk \(0, 0, [01]\).*swapped or altered"):
        xr_inr.open_zarr(store)["r"].values
    assert {index for _, index, _ in xr_inr.verify(store).mismatched} == {(0, 0, 0), (0, 0, 1)}


def test_a_corrupted_chunk_is_unreadable(store):
    path = chunk_file(store, (0, 1, 0))
    data = bytearray(path.read_bytes())
    data[40] ^= 0xFF
    path.write_bytes(bytes(data))
    report = xr_inr.verify(store)
    assert [index for _, index, _ in report.mismatched] == [(0, 1, 0)]  # not the bytes the writer stored
    with pytest.raises(Exception, match="checksum"):  # a plain reader: the stream's own CRC
        xr.open_zarr(store)["r"].values


@pytest.mark.parametrize("kind", ["float stream", "oversized stream"])
def test_a_stream_of_another_dtype_or_shape_raises_in_both_readers(store, kind):
    shape, dtype = ((20, 20, 12), np.float32) if kind == "float stream" else ((20, 24, 12), np.uint16)
    record(store, (0, 0, 0), constant_stream(shape, dtype, 1e6 if dtype == np.float32 else 7))
    with pytest.raises(ChunkError, match=r"variable 'r', chunk \(0, 0, 0\).*the chunk is \(20, 20, 12\) uint16"):
        xr_inr.open_zarr(store)["r"].values  # checked before decoding (the manifest agrees here)
    with pytest.raises(Exception, match=r"the chunk is \(20, 20, 12\) uint16"):
        xr.open_zarr(store)["r"].values  # the Zarr 3 codec checks its chunk_spec
    assert xr_inr.verify(store).mismatched


@pytest.mark.parametrize("shape, dtype", [((20, 12, 20), np.uint16), ((20, 20, 12), np.int16)])
def test_a_format_2_plain_reader_refuses_a_stream_of_the_same_size_but_another_layout(written, tmp_path, shape,
                                                                                       dtype):
    path = tmp_path / "v2.zarr"
    xr_inr.open_zarr(written[0])["r"].inr.to_zarr(path, zarr_format=2)  # the stored streams, no refit
    assert numcodecs.get_codec(json.loads((path / "r" / ".zarray").read_text())["compressor"]).chunk_shape == (20, 20, 12)
    np.testing.assert_array_equal(xr.open_zarr(path)["r"].values, written[1])
    (path / "r" / "0.0.0").write_bytes(constant_stream(shape, dtype, 7))  # Zarr would reshape or view it silently
    with pytest.raises(Exception, match=r"the chunk is \(20, 20, 12\) uint16"):
        xr.open_zarr(path)["r"].values


def strip_layout(store: Path, names=(".zarray", ".zmetadata")) -> None:
    """Drop ``chunk_shape`` and ``dtype`` from the xr_inr compressor configs (in the files ``names``),
    as in a format 2 store written before 2026-11-26."""
    def strip(zarray):
        if (zarray.get("compressor") or {}).get("id") == "xr_inr":
            del zarray["compressor"]["chunk_shape"], zarray["compressor"]["dtype"]

    for path in (p for name in names for p in store.rglob(name)):
        doc = json.loads(path.read_text())
        for key, entry in (doc["metadata"].items() if path.name == ".zmetadata" else [(".zarray", doc)]):
            if key.endswith(".zarray"):
                strip(entry)
        path.write_text(json.dumps(doc))


@pytest.fixture
def old_v2(written, tmp_path):
    """A format 2 store as written before 2026-11-26: no chunk layout in the compressor config."""
    path = tmp_path / "old.zarr"
    xr_inr.open_zarr(written[0])["r"].inr.to_zarr(path, zarr_format=2)  # the stored streams, no refit
    strip_layout(path)
    return path


PLAIN_READER = """
import json, sys
import numpy as np, xarray as xr
errors = {}
for path in sys.argv[1:]:  # xr_inr is not imported: the codec comes through its entry point
    try:
        np.save(path + ".npy", xr.open_zarr(path)["r"].values)
    except Exception as err:
        errors[path] = f"{type(err).__name__}: {err}"
print(json.dumps(errors))
"""


def files(store: Path) -> dict:
    return {path: path.read_bytes() for path in store.rglob("*") if path.is_file()}


def test_upgrade_records_the_chunk_layout_so_that_a_format_2_plain_reader_refuses_another_dtype(written, old_v2,
                                                                                               tmp_path):
    damaged, kept = tmp_path / "damaged.zarr", tmp_path / "kept.zarr"
    shutil.copytree(old_v2, damaged)
    (damaged / "r" / "0.0.0").write_bytes(constant_stream((20, 20, 12), np.int16, -7))  # same byte size
    shutil.copytree(damaged, kept)  # not upgraded
    report = xr_inr.verify(old_v2)
    assert report.ok and report.without_layout == ["r"]  # mentioned, not a problem: verify checks layouts itself
    compressor = json.loads((old_v2 / "r" / ".zarray").read_text())["compressor"]
    chunks = {path: data for path, data in files(damaged).items() if path.parent.name == "r" and path.name[0] != "."}

    layout = {"chunk_shape": [20, 20, 12], "dtype": "uint16"}
    assert xr_inr.upgrade(old_v2) == xr_inr.upgrade(damaged) == {"r": layout}
    upgraded = json.loads((old_v2 / "r" / ".zarray").read_text())["compressor"]
    assert upgraded == {**compressor, **layout}  # the rest of the config as it was
    assert json.loads((old_v2 / ".zmetadata").read_text())["metadata"]["r/.zarray"]["compressor"] == upgraded
    assert all(path.read_bytes() == data for path, data in chunks.items())  # chunks neither read nor rewritten
    assert not xr_inr.verify(old_v2).without_layout

    result = subprocess.run([sys.executable, "-c", PLAIN_READER, str(kept), str(damaged), str(old_v2)],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    errors = json.loads(result.stdout)
    before = np.load(f"{kept}.npy")  # before the upgrade: the int16 stream read as uint16, silently
    assert str(kept) not in errors and (before[:, :20, :12] == np.uint16(65536 - 7)).all()
    np.testing.assert_array_equal(before[:, :, 12:], written[1][:, :, 12:])
    assert r"the chunk is (20, 20, 12) uint16" in errors[str(damaged)]  # after: refused before decoding
    assert str(old_v2) not in errors
    np.testing.assert_array_equal(np.load(f"{old_v2}.npy"), written[1])


def test_upgrade_is_idempotent_and_leaves_format_3_and_up_to_date_stores_alone(written, old_v2, tmp_path):
    fresh = tmp_path / "fresh.zarr"
    xr_inr.open_zarr(written[0])["r"].inr.to_zarr(fresh, zarr_format=2)
    assert xr_inr.upgrade(old_v2)
    for path in (old_v2, fresh, written[0]):  # upgraded, written with the layout, format 3
        before = files(path)
        assert xr_inr.upgrade(path) == {} and files(path) == before
        assert not xr_inr.verify(path).without_layout
    upgraded = files(old_v2)
    strip_layout(old_v2, names=[".zmetadata"])  # a consolidated copy alone lacking the layout
    assert xr_inr.verify(old_v2).without_layout == ["r"]  # what plain readers see
    assert list(xr_inr.upgrade(old_v2)) == ["r"]
    assert json.loads((old_v2 / ".zmetadata").read_text()) == json.loads(upgraded[old_v2 / ".zmetadata"])


def test_upgrade_leaves_the_store_alone_when_an_array_has_filters(tmp_path):
    import zarr

    path = tmp_path / "filters.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=2)
    group.create_array("a", shape=(2, 4, 4), dtype="f8", filters=[numcodecs.AsType("f4", "f8")],
                       compressors=INRCodec())  # the compressor gets float32 blocks, not the array's float64
    group.create_array("b", shape=(2, 4, 4), dtype="u2", compressors=INRCodec())
    before = files(path)
    with pytest.raises(ValueError, match="'a': filters come before the xr_inr compressor.*left as it was"):
        xr_inr.upgrade(path)
    assert files(path) == before


def test_the_upgrade_command_names_the_arrays_it_changed(written, tmp_path, capsys):
    store = tmp_path / "grouped.zarr"
    xr_inr.open_zarr(written[0])["r"].inr.to_zarr(store, group="g", zarr_format=2)
    strip_layout(store)
    assert cli.main(["upgrade", str(store), "--group", "g"]) == 0
    out = capsys.readouterr().out
    assert "recorded the chunk layout of 1 array" in out and "  r: chunk_shape (20, 20, 12), dtype uint16" in out
    assert cli.main(["upgrade", str(store), "--group", "g"]) == 0
    assert "nothing to upgrade" in capsys.readouterr().out
    assert not xr_inr.verify(store, group="g").without_layout


def test_the_verify_command_names_the_damaged_chunk_and_exits_with_1(store, capsys):
    assert cli.main(["verify", str(store)]) == 0
    assert "ok, 6 chunks checked" in capsys.readouterr().out
    chunk_file(store, (0, 1, 2)).unlink()
    assert cli.main(["verify", str(store)]) == 1
    out = capsys.readouterr().out
    assert "problems found" in out and "1 missing" in out and "(0, 1, 2)" in out

def test_an_unfinished_write_is_reported_not_read_as_fill(store):
    import zarr

    group = zarr.open_group(store, mode="r+")
    group.attrs["xr_inr_write"] = {**group.attrs["xr_inr_write"], "state": "writing"}
    with pytest.raises(ChunkError, match="did not finish"):
        xr_inr.open_zarr(store, consolidated=False)
    assert xr_inr.verify(store).unfinished


# -- 2. resumable, atomic writes --------------------------------------------------------

KILLED_RUN = """
import sys, time
import numpy as np, xarray as xr, dask
import xr_inr
from xr_inr.xarray_zarr import parallel

fit = parallel.fit_task
def slow_fit(*args):  # a pause after each fit, so that the kill lands between chunks
    stream = fit(*args)
    time.sleep(0.4)
    return stream
parallel.fit_task = slow_fit
cube = xr.DataArray(np.load(sys.argv[2]), dims=("band", "y", "x"), name="r")
with dask.config.set(scheduler="threads", num_workers=1):
    cube.inr.to_zarr(sys.argv[1], 1.0, mode="w", chunks={"band": -1, "y": 20, "x": 12}, steps=30, progress=False)
"""


def test_a_killed_overwrite_leaves_the_old_store_and_the_same_call_resumes(cube, written, tmp_path, monkeypatch):
    target = tmp_path / "cube.zarr"
    shutil.copytree(written[0], target)
    clean = {path.relative_to(target): path.read_bytes() for path in (target / "r" / "c").rglob("*")
             if path.is_file()}
    np.save(tmp_path / "cube.npy", cube.values)
    staging = tmp_path / "cube.zarr.writing"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(target), str(tmp_path / "cube.npy")], cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while len([p for p in (staging / "r" / "c").rglob("*") if p.is_file()]) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it was killed"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()

    assert xr_inr.verify(target).ok  # readers still see the old, complete store
    report = xr_inr.verify(target.with_name("cube.zarr.writing"))
    assert report.unfinished and 0 < len(report.missing) < 6 and not report.mismatched
    missing = {index for _, index, _ in report.missing}

    fits = []
    fit = parallel.fit_task
    monkeypatch.setattr(parallel, "fit_task", lambda *args: fits.append(args) or fit(*args))
    with dask.config.set(scheduler="threads", num_workers=1):
        cube.inr.to_zarr(target, BPPPB, mode="w", chunks=CHUNKS, **FAST)  # the same call again
    assert len(fits) == len(missing)
    assert not staging.exists() and xr_inr.verify(target).ok
    after = {path.relative_to(target): path.read_bytes() for path in (target / "r" / "c").rglob("*")
             if path.is_file()}
    assert after == clean  # the same chunks as a clean run


def test_mode_w_minus_refuses_an_existing_store_before_fitting(cube, written, monkeypatch):
    monkeypatch.setattr(parallel, "fit_task", lambda *args: pytest.fail("fitted"))
    with pytest.raises(FileExistsError, match="mode='w'"):
        cube.inr.to_zarr(written[0], BPPPB, chunks=CHUNKS, **FAST)



def recording_store():
    """A zarr MemoryStore that keeps a copy of its keys after every write or delete (``snapshots``,
    once set to a list)."""
    import zarr

    class Recording(zarr.storage.MemoryStore):
        snapshots = None

        def _snap(self):
            if self.snapshots is not None:
                self.snapshots.append(dict(self._store_dict))

        async def set(self, key, value, byte_range=None):
            await super().set(key, value)
            self._snap()

        async def delete(self, key):
            await super().delete(key)
            self._snap()

    return Recording()


def stores_read_at_each_step(old, new, zarr_format, group):
    """Overwrite ``old`` with ``new`` (compressed DataArrays) in a memory store; each state the
    store went through (the first: before), as read by plain xarray (consolidated metadata, its
    default) and, array by array, by zarr without consolidated metadata."""
    import zarr

    def read(keys):
        state = zarr.storage.MemoryStore(store_dict=dict(keys))
        arrays = zarr.open_group(state, path=group or "", mode="r", use_consolidated=False).arrays()
        return xr.open_zarr(state, group=group).load(), {name: array[...] for name, array in arrays}

    store = recording_store()
    old.inr.to_zarr(store, group=group, zarr_format=zarr_format)
    states = [read(store._store_dict)]
    store.snapshots = []
    new.inr.to_zarr(store, group=group, zarr_format=zarr_format, mode="w")
    return states + [read(keys) for keys in store.snapshots]


@pytest.mark.parametrize("zarr_format, group, nx", [(3, "scene/cube", 18), (2, "g", 12)])
def test_readers_of_a_store_written_over_see_the_old_or_the_new_never_a_mix(cube, zarr_format, group, nx):
    """A memory store (as an object store or a group, it cannot be renamed): the new store is
    written beside the old one and copied over it (docs/reliability.md). Format 2 keeps the
    coordinates: their chunk keys are the same in both stores."""
    small = cube[:6, :16, :12].assign_coords(x=np.arange(12))
    other = (cube[6:12, :16, :nx] // 2).assign_coords(x=np.arange(nx) + (100 if nx != 12 else 0))
    old, new = (c.inr.compress(0.5, chunks={"band": -1, "y": 8, "x": 6}, method="siren", **FAST)
                for c in (small, other.assign_attrs(version=2)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        states = stores_read_at_each_step(old, new, zarr_format, group)
    (first, first_arrays), (last, last_arrays) = states[0], states[-1]
    assert len(states) > 20 and not first.identical(last)
    np.testing.assert_array_equal(last["r"].values, new.values)
    for plain, arrays in states:
        assert plain.identical(first) or plain.identical(last), "a plain reader saw a mix of the two stores"
        for name, values in arrays.items():  # without consolidated metadata: each array old or new
            assert any(np.array_equal(values, a.get(name)) for a in (first_arrays, last_arrays)), name


def test_an_interrupted_write_over_a_memory_store_leaves_the_old_one_and_resumes(cube, written, monkeypatch):
    import zarr

    class Crash(Exception):
        pass

    class Store(zarr.storage.MemoryStore):
        copies_left = None  # writes over the target after which the copy into place crashes

        async def set(self, key, value, byte_range=None):
            if self.copies_left is not None and not key.startswith(".writing/"):
                if self.copies_left == 0:
                    raise Crash
                self.copies_left -= 1
            await super().set(key, value)

    store = Store()
    xr_inr.open_zarr(written[0])["r"].inr.to_zarr(store)  # the old store: its streams, no fit
    before = xr.open_zarr(store).load()
    fits, fit = [], parallel.fit_task

    def fit_twice(*args):
        if len(fits) == 2:
            raise Crash
        fits.append(args)
        return fit(*args)

    def run():
        fits.clear()
        with dask.config.set(scheduler="threads", num_workers=1):
            other.inr.to_zarr(store, BPPPB, mode="w", chunks=CHUNKS, **FAST)

    other = cube // 2
    monkeypatch.setattr(parallel, "fit_task", fit_twice)
    with pytest.raises(Crash):
        run()  # killed after two fits
    assert xr.open_zarr(store).load().identical(before) and xr_inr.verify(store).ok
    report = xr_inr.verify(store, group=".writing")  # the unfinished write, beside the store's root
    assert report.unfinished and len(report.missing) == 4

    monkeypatch.setattr(parallel, "fit_task", lambda *args: fits.append(args) or fit(*args))
    store.copies_left = 3
    with pytest.raises(Crash):
        run()  # fits the 4 missing chunks, killed while copying the new store into place
    assert len(fits) == 4 and xr.open_zarr(store).load().identical(before)
    store.copies_left = None
    run()  # the same call again: the finished copy is put in place, nothing fitted
    assert not fits and ".writing/zarr.json" not in store._store_dict and xr_inr.verify(store).ok
    clean = zarr.storage.MemoryStore()
    with dask.config.set(scheduler="threads", num_workers=1):
        other.inr.to_zarr(clean, BPPPB, chunks=CHUNKS, **FAST)
    assert xr.open_zarr(store).load().identical(xr.open_zarr(clean).load())


def test_an_interrupted_first_write_to_a_store_object_resumes_with_the_default_mode(written, monkeypatch):
    import zarr

    from xr_inr.xarray_zarr import store as store_module

    compressed = xr_inr.open_zarr(written[0])["r"]
    put = store_module._put_stream
    puts = []

    def put_twice(*args):
        if len(puts) == 2:
            raise RuntimeError("killed")
        puts.append(args)
        put(*args)

    store = zarr.storage.MemoryStore()
    monkeypatch.setattr(store_module, "_put_stream", put_twice)
    with pytest.raises(RuntimeError, match="killed"):
        compressed.inr.to_zarr(store)
    assert xr_inr.verify(store).unfinished  # checked where the unfinished write is
    monkeypatch.setattr(store_module, "_put_stream", put)
    compressed.inr.to_zarr(store)  # mode="w-": the store's root holds only the unfinished write
    assert xr_inr.verify(store).ok and not any(key.startswith(".writing") for key in store._store_dict)
    with pytest.raises(FileExistsError):
        compressed.inr.to_zarr(store)


def test_a_url_store_is_written_beside_its_target_and_copied_over_it(written):
    import fsspec

    compressed = xr_inr.open_zarr(written[0])["r"]
    url = "memory://xr-inr-test/scene.zarr"
    compressed.inr.to_zarr(url)
    halved = (compressed.astype("float32") / 2).astype("uint16").inr.compress(BPPPB, chunks=CHUNKS, method="siren",
                                                                              **FAST)
    halved.inr.to_zarr(url, mode="w")
    memory = fsspec.filesystem("memory")
    assert not memory.exists("/xr-inr-test/scene.zarr.writing")  # the staged copy, deleted
    np.testing.assert_array_equal(xr.open_zarr(url)["r"].values, halved.values)
    assert xr_inr.verify(url).ok
    memory.rm("/xr-inr-test", recursive=True)

def test_a_write_resumed_with_other_attributes_or_coordinates_starts_afresh(written, monkeypatch):
    """The resumed layout would keep the interrupted run's: the fingerprint covers the whole dataset."""
    import zarr

    from xr_inr.xarray_zarr import store as store_module

    compressed = xr_inr.open_zarr(written[0])["r"]
    put = store_module._put_stream
    monkeypatch.setattr(store_module, "_put_stream", lambda *args: (_ for _ in ()).throw(RuntimeError("killed")))
    store = zarr.storage.MemoryStore()
    with pytest.raises(RuntimeError, match="killed"):
        compressed.inr.to_zarr(store)
    monkeypatch.setattr(store_module, "_put_stream", put)
    changed = compressed.assign_attrs(units="reflectance").assign_coords(x=np.arange(compressed.sizes["x"]) * 30.0)
    changed.inr.to_zarr(store)
    read = xr.open_zarr(store)
    assert read["r"].attrs["units"] == "reflectance" and read["x"].values[1] == 30.0

# -- 3. forward-compatible metadata -----------------------------------------------------

ODD_SETTINGS = {"written_by_a_newer_version": {"a": 1}, "bpppb": 1e9, "steps": -3}


def test_readers_ignore_encode_only_settings_of_a_stored_config(store, written):
    meta = store / "r" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["codecs"][0]["configuration"].update(ODD_SETTINGS)
    meta.write_text(json.dumps(doc))
    for path in store.rglob("zarr.json"):  # the consolidated copy too
        text = json.loads(path.read_text())
        if "consolidated_metadata" in text:
            text["consolidated_metadata"]["metadata"]["r"] = doc
            path.write_text(json.dumps(text))
    np.testing.assert_array_equal(xr.open_zarr(store)["r"].values, written[1])
    np.testing.assert_array_equal(xr_inr.open_zarr(store)["r"].values, written[1])
    codec = INRZarrCodec.from_dict({"name": "xr_inr", "configuration": {"band_axis": 0, **ODD_SETTINGS}})
    assert codec.to_dict()["configuration"]["written_by_a_newer_version"] == {"a": 1}  # kept as stored
    with pytest.raises(ValueError, match="stored codec config cannot encode"):
        codec.codec.encode(np.zeros((2, 4, 4), np.float32))


def test_numcodecs_config_is_read_leniently_and_encoding_with_it_raises():
    stream = constant_stream((2, 3, 4), np.uint16, 9)
    codec = numcodecs.get_codec({"id": "xr_inr", "band_axis": 0, **ODD_SETTINGS})
    assert (codec.decode(stream) == 9).all()
    assert codec.get_config()["steps"] == -3
    with pytest.raises(ValueError, match="cannot encode"):
        codec.encode(np.zeros((2, 4, 4), np.float32))
    with pytest.raises(ValueError, match="band_axis"):  # what decoding needs is still checked
        numcodecs.get_codec({"id": "xr_inr", "band_axis": 7})
    with pytest.raises(ValueError):
        INRCodec(steps=-3)  # and a bad config given to encode


# -- 4. reproducible encodes --------------------------------------------------------------


def test_same_bytes_whatever_the_thread_count(cube):
    """The threaded scheduler with 1 and 2 workers (a distributed LocalCluster: test_zarr_accessor.py,
    test_an_open_distributed_client_is_used)."""
    streams = []
    for workers in (1, 2):
        with dask.config.set(num_workers=workers):
            small = cube.inr.compress(BPPPB, chunks=CHUNKS, scheduler="threads", **FAST)
        streams.append(source_of(small.data).streams)
    assert streams[0] == streams[1]


# -- 5. encode input checks and quality warnings -----------------------------------------


def test_an_empty_dataarray_is_named():
    empty = xr.DataArray(np.zeros((0, 4, 4), np.float32), dims=("band", "y", "x"), name="e")
    with pytest.raises(ValueError, match="'e' is empty"):
        empty.inr.compress(0.1, progress=False)


def test_float64_values_near_the_limit_are_refused():
    block = np.full((3, 8, 8), 1.7e308)
    block[0] = -1.7e308
    with pytest.raises(ValueError, match="too large"):
        INRCodec(bpppb=1.0).encode(block)


@pytest.mark.parametrize("bpppb", [65, 1e9])
def test_a_budget_beyond_float64_bits_is_refused(bpppb):
    with pytest.raises(ValueError, match="above 64"):
        INRCodec(bpppb=bpppb, method="siren")


def test_cuda_without_cuda_is_named():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    block = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="no CUDA device"):
        INRCodec(bpppb=1.0, device="cuda", steps=1).encode(block)


@pytest.mark.filterwarnings("ignore::xr_inr.BudgetWarning")  # a small block: the rate is not the point
def test_big_endian_uint16_is_read_in_native_order(cube):
    big = cube.astype(">u2")
    small = big.inr.compress(BPPPB, chunks=CHUNKS, **FAST)
    assert small.dtype == np.uint16
    reference = cube.inr.compress(BPPPB, chunks=CHUNKS, **FAST)
    np.testing.assert_array_equal(small.values, reference.values)
    block = cube.values[:, :8, :8]
    codec = INRCodec(bpppb=BPPPB, steps=5)
    assert codec.encode(block.astype(">u2")) == codec.encode(block)  # the codec alone too


def test_a_mask_that_eats_the_budget_warns(cube):
    block = cube.values[:, :20, :20].astype(np.float32)
    block[np.random.default_rng(0).random(block.shape) < 0.10] = np.nan  # 10 % scattered elements
    with pytest.warns(QualityWarning, match=r"10\.\d% of the block's elements are NaN.*mask takes \d+ of the 1000"):
        INRCodec(bpppb=BPPPB, steps=5).encode(block)
    with warnings.catch_warnings():
        warnings.simplefilter("error", QualityWarning)
        block[np.isnan(block)] = 0.0
        block[:, :2, :2] = np.nan  # a few whole pixels: a small mask
        INRCodec(bpppb=BPPPB, steps=5).encode(block)
