"""Shared test fixtures: where the real hyperspectral cubes are.

A small crop of a real scene is committed under tests/fixtures/ (its source is
named in the README there), so a fresh clone runs the real-data tests. Tests
that need the larger cubes look in $XR_INR_DATA, else ../shared/datasets
beside the repository. They skip when the data is absent (a user's machine)
but fail in CI (CI=true), where the data is required.
"""

import os
from pathlib import Path

import numpy as np
import pytest

DATA_ENV = "XR_INR_DATA"
REPO = Path(__file__).resolve().parent
FIXTURES = REPO / "tests" / "fixtures"


def datasets_dir() -> Path:
    return Path(os.environ.get(DATA_ENV) or REPO.parent / "shared" / "datasets")


def _missing(message: str):
    """Skip a test whose data is absent; in CI the data is required, so fail."""
    if os.environ.get("CI"):
        pytest.fail(message + ": the shared datasets are required in CI")
    pytest.skip(message)


def require_dataset(filename: str) -> Path:
    """Path of a shared dataset file; skip (or fail in CI) when it is missing."""
    path = datasets_dir() / filename
    if not path.exists():
        _missing(f"dataset {filename} not found in {datasets_dir()} (set ${DATA_ENV})")
    return path


@pytest.fixture
def shared_dataset():
    """Callable fixture: shared_dataset("jasper_ridge_100x100x198.npz") -> Path."""
    return require_dataset


@pytest.fixture(scope="session")
def jasper_crop() -> np.ndarray:
    """The committed crop of Jasper Ridge as (band, y, x) uint16, 40 x 40 x 40 (every 5th band)."""
    return np.load(FIXTURES / "jasper_ridge_crop_40x40x40.npz")["cube"].transpose(2, 0, 1).copy()


@pytest.fixture(scope="session")
def jasper_cube() -> np.ndarray:
    """Jasper Ridge as (band, y, x) uint16, 198 x 100 x 100."""
    path = require_dataset("jasper_ridge_100x100x198.npz")
    return np.load(path)["cube"].transpose(2, 0, 1).copy()


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The shared data folder; skip (or fail in CI) when it is missing."""
    folder = datasets_dir()
    if not folder.is_dir():
        _missing(f"shared datasets folder {folder} not found (set ${DATA_ENV})")
    return folder
