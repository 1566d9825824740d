"""Fixtures for `gallery serve`: a face gallery built once from the shared photos, and real servers on it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from gallery import Gallery

REPO = Path(__file__).resolve().parents[2]
FACES = REPO.parent / "shared" / "faces"


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    if not (FACES / "gallery").is_dir():
        pytest.skip(f"the shared face photos are not at {FACES}")
    return FACES


@pytest.fixture(scope="session")
def face_gallery(faces_dir, tmp_path_factory) -> Gallery:
    """The shared photos' gallery (5 identities, 9 faces), built once; tests copy it before changing it."""
    return Gallery.from_photos(faces_dir / "gallery", tmp_path_factory.mktemp("faces") / "gallery", progress=False)


@pytest.fixture(scope="session")
def face_server(face_gallery, tmp_path_factory):
    """A server on a copy of the face gallery with a key per role and small limits to test them against."""
    pytest.importorskip("fastapi")
    from servers import make_keys, start_server

    root = tmp_path_factory.mktemp("face-server") / "gallery"
    shutil.copytree(face_gallery.root, root)
    server = start_server(root, "--max-upload-mb", "2", "--max-pixels", "5000000", "--max-photos", "4",
                          "--max-k", "10", keys=make_keys(root))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory) -> Path:
    """Where tests leave files for people to look at ($GALLERY_TEST_ARTEFACTS, else the pytest temp folder)."""
    path = Path(os.environ.get("GALLERY_TEST_ARTEFACTS") or tmp_path_factory.mktemp("artefacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path
