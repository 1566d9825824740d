"""Real photos from ../shared/faces (see its README), read in place by relative path from the repo root."""

from pathlib import Path

import pytest

FACES = Path(__file__).resolve().parents[2].parent / "shared" / "faces"


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    if not FACES.is_dir():  # pragma: no cover - the shared photos are part of the workspace
        pytest.skip(f"{FACES} not found")
    return FACES
