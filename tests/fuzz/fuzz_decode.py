"""Coverage-guided fuzzing of the decoder with atheris (libFuzzer), seeded with the golden streams.

    python tests/fuzz/fuzz_decode.py -runs=2000            # or -max_total_time=SECONDS, any libFuzzer flag

An input is a stream whose CRC is recomputed (:func:`xr_inr.core.stream.seal` of all but its
last 4 bytes), so that mutations reach the payload parsers (tests/test_fuzz.py checks the CRC's
refusals). :func:`check` is the property (tests/test_fuzz.py uses it too):
the decoder returns an array of the declared shape and dtype or raises StreamError, whatever
numpy's error state. The decoder's limit is lowered to FUZZ_LIMIT values so that every input
decodes in milliseconds. Every 1000 inputs a line of figures goes to stderr: inputs, outcomes
by class, peak RSS, the slowest input's time.
"""

from __future__ import annotations

import collections
import resource
import sys
import time
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).resolve().parent.parent / "fixtures" / "golden"
FUZZ_LIMIT = 2**16
"""MAX_BLOCK_VALUES while fuzzing (every golden stream stays under it)."""


def check(data: bytes) -> str:
    """Decode ``data`` (and inspect it) under ``np.errstate(all="raise")``: an array of the declared
    shape and dtype, which check_layout accepts, or a StreamError. Returns the outcome's name."""
    from xr_inr import StreamError, decode_block, inspect
    from xr_inr.core.decode import check_layout
    from xr_inr.core.stream import Reader

    with np.errstate(all="raise"):
        try:
            header = Reader(data).header
            info = inspect(data)
            decoded = decode_block(data)
        except StreamError as err:
            return type(err).__name__
    assert decoded.shape == header.out_shape and decoded.dtype == header.dtype, (decoded.shape, header)
    assert info["shape"] == header.out_shape
    check_layout(data, decoded.shape, decoded.dtype)
    return "decoded"


def resealed(data: bytes) -> bytes:
    """``data`` with its last 4 bytes replaced by the CRC of the others."""
    from xr_inr.core.stream import CRC_BYTES, seal

    return seal(data[:-CRC_BYTES]) if len(data) >= CRC_BYTES else data


class Figures:
    """Inputs tried, outcomes by class, the slowest input; printed as one line."""

    def __init__(self):
        self.inputs, self.slowest, self.outcomes = 0, 0.0, collections.Counter()

    def add(self, outcome: str, seconds: float) -> None:
        self.inputs += 1
        self.outcomes[outcome] += 1
        self.slowest = max(self.slowest, seconds)
        if self.inputs % 1000 == 0:
            self.report()

    def report(self) -> None:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"fuzz figures: {self.inputs} inputs, outcomes {dict(self.outcomes.most_common())}, "
              f"peak RSS {peak_mib:.0f} MiB, slowest input {self.slowest * 1000:.1f} ms", file=sys.stderr, flush=True)


def main() -> None:
    import atheris

    with atheris.instrument_imports(include=["xr_inr"]):  # the decode path, for coverage
        import xr_inr.core.decode
        import xr_inr.core.stream
        import xr_inr.methods  # noqa: F401
    xr_inr.core.stream.MAX_BLOCK_VALUES = FUZZ_LIMIT
    figures = Figures()

    def one_input(data: bytes) -> None:
        start = time.perf_counter()
        outcome = check(resealed(data))
        figures.add(outcome, time.perf_counter() - start)

    seeds = ",".join(str(path) for path in sorted(GOLDEN.glob("*.xinr")))
    atheris.Setup([*sys.argv, f"-seed_inputs={seeds}"], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
