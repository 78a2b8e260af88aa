"""Golden streams: every decoder must give the recorded arrays, whatever the threads, SIMD paths or BLAS.

The streams in tests/fixtures/golden/ were written by tests/make_golden.py
(format versions 2 to 4) or by xr-inr 0.1.0 (version 1). Grid, raw and constant
streams must decode bit for bit (sha256 of the array); SIREN streams, whose
float32 network is evaluated with BLAS and numpy's sin, within the tolerance
docs/format.md states.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xr_inr import StreamError, decode_block
from xr_inr.core import entropy

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
DECODABLE = sorted(name for name, entry in MANIFEST.items() if not entry.get("refused"))
SIREN_RANGE_TOLERANCE = 1e-6
"""SIREN floats may differ by this fraction of the block's value range, integers by 1."""


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def check(name: str, decoded: np.ndarray) -> None:
    entry = MANIFEST[name]
    assert list(decoded.shape) == entry["shape"] and str(decoded.dtype) == entry["dtype"], name
    if entry["exact"]:
        assert sha256(decoded) == entry["sha256"], f"{name} no longer decodes to its recorded array"
        return
    reference = np.load(GOLDEN / "siren_reference.npz")[name].astype(np.float64)
    error = np.abs(decoded.astype(np.float64) - reference).max()
    bound = 1.0 if decoded.dtype.kind in "iu" else SIREN_RANGE_TOLERANCE * np.ptp(reference)
    assert error <= bound, f"{name}: {error} > {bound}"


@pytest.mark.parametrize("range_decoder", ["compiled", "constriction"])
@pytest.mark.parametrize("name", DECODABLE)
def test_golden_streams_decode_to_their_recorded_arrays(name, range_decoder, monkeypatch):
    if range_decoder == "constriction":  # what a build without a C compiler runs
        monkeypatch.setattr(entropy, "_compiled", None)
    elif entropy._compiled is None:
        pytest.skip("the _range extension is not built")
    check(name, decode_block((GOLDEN / f"{name}.xinr").read_bytes()))


def test_version_1_grid_streams_are_refused_naming_both_versions():
    with pytest.raises(StreamError, match=r"version 1 \(xr-inr 0\.1\.0\).*versions 2 to 4"):
        decode_block((GOLDEN / "v1_grid_uint16.xinr").read_bytes())


def _dispatched_cpu_features() -> str:
    """numpy's SIMD targets this CPU runs (to disable them all)."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    return " ".join(f for f in __cpu_dispatch__ if __cpu_features__.get(f))


DECODE_ALL = """
import sys, numpy as np, xr_inr
from pathlib import Path
golden = Path(sys.argv[1])
np.savez(sys.argv[2], **{p.stem: xr_inr.decode_block(p.read_bytes()) for p in sorted(golden.glob("*.xinr"))
                         if not p.stem.startswith("v1_grid")})
"""

VARIATIONS = {
    "1 thread": {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    "2 threads": {"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"},
    "numpy SIMD off": {"NPY_DISABLE_CPU_FEATURES": _dispatched_cpu_features()},
    "OpenBLAS Prescott kernels": {"OPENBLAS_CORETYPE": "Prescott"},
}


@pytest.mark.parametrize("variation", VARIATIONS)
def test_decoding_does_not_depend_on_threads_simd_or_blas_kernels(variation, tmp_path):
    env = {**os.environ, **VARIATIONS[variation]}
    result = subprocess.run([sys.executable, "-c", DECODE_ALL, str(GOLDEN), str(tmp_path / "out.npz")], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    decoded = np.load(tmp_path / "out.npz")
    assert sorted(decoded.files) == DECODABLE
    for name in DECODABLE:
        check(name, decoded[name])
