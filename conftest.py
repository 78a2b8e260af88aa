"""Shared pytest fixtures: where the real hyperspectral cubes live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent


def shared_datasets_dir() -> Path | None:
    """The data folder: $XR_INR_DATA, else ../shared/datasets beside the repo; None if absent."""
    configured = os.environ.get("XR_INR_DATA")
    folder = Path(configured) if configured else REPO_ROOT.parent / "shared" / "datasets"
    return folder if folder.is_dir() else None


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """Path of the shared data folder; skips the test when it is not there."""
    folder = shared_datasets_dir()
    if folder is None:
        pytest.skip("shared datasets not found (set XR_INR_DATA or place ../shared/datasets)")
    return folder


@pytest.fixture(scope="session")
def shared_file(shared_datasets):
    """Function returning the path of one shared file, skipping when it is missing."""

    def find(name: str) -> Path:
        path = shared_datasets / name
        if not path.exists():
            pytest.skip(f"{name} not in {shared_datasets}")
        return path

    return find
