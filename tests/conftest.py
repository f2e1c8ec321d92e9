"""Shared fixtures: the golden reference data lives in ../shared/reference (never copied into the repo)."""
import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"


def load_script(name: str):
    """scripts/NAME.py as a module, so a test calls its main() in this process (no interpreter start-up)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        # In CI (CI=true) a missing reference is a failure, not a silent skip.
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(f"reference data not found at {REFERENCE}")
        pytest.skip(f"reference data not found at {REFERENCE}")
    return REFERENCE
