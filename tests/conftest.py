"""Shared fixtures: the golden reference data lives in ../shared/reference (never copied into the repo)."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        # In CI (CI=true) a missing reference is a failure, not a silent skip.
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(f"reference data not found at {REFERENCE}")
        pytest.skip(f"reference data not found at {REFERENCE}")
    return REFERENCE
