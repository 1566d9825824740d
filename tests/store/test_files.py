"""File primitives: names from a gallery's files stay inside it, erasure never follows a link, and a
gallery's files are private to their owner unless the group is asked for."""

import os
import re
import stat

import numpy as np
import pytest

from gallery import Gallery
from gallery.errors import CorruptGalleryError
from gallery.store.files import erase_file, gallery_file, save_npy
from gallery.synthetic import synthetic_gallery


@pytest.mark.parametrize("name, why", [
    ("../outside.txt", "leaves the gallery folder"),
    ("shards/../../outside.txt", "leaves the gallery folder"),
    ("/etc/passwd", "is an absolute path"),
    ("C:/x.npy", "is an absolute path"),
    ("shards\\x.npy", "holds a backslash"),
    ("index/x.faiss", "is not a file of the gallery's shards/ folder"),
    ("shards/sub/x.npy", "is not a file of the gallery's shards/ folder"),
    ("", "is not a file name"),
    (None, "is not a file name"),
])
def test_a_name_that_could_leave_the_folder_is_refused_naming_its_field(tmp_path, name, why):
    with pytest.raises(CorruptGalleryError, match=re.escape(f"manifest.json: shards[3].file {name!r} {why}")):
        gallery_file(tmp_path, name, "shards[3].file", "manifest.json", under="shards")


def test_a_name_inside_the_folder_is_its_path(tmp_path):
    assert gallery_file(tmp_path, "shards/shard-000001.parquet", "f", "m", under="shards") == tmp_path / "shards" / "shard-000001.parquet"


def test_a_symlinked_folder_or_file_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "shards").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CorruptGalleryError, match="leaves the gallery folder"):
        gallery_file(tmp_path / "g", "shards/a.npy", "f", "m", under="shards")
    (tmp_path / "g" / "index").mkdir()
    (tmp_path / "g" / "index" / "a.faiss").symlink_to(tmp_path / "g" / "manifest.json")
    with pytest.raises(CorruptGalleryError, match="is a symlink or not a regular file"):
        gallery_file(tmp_path / "g", "index/a.faiss", "f", "m", under="index")


def test_erasing_a_symlink_unlinks_it_and_leaves_its_target(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_bytes(b"keep me")
    link = tmp_path / "link"
    link.symlink_to(target)
    erase_file(link)
    assert not link.is_symlink() and target.read_bytes() == b"keep me"


def test_erasing_a_file_zeroes_its_blocks_before_unlinking(tmp_path):
    path = tmp_path / "x.npy"
    path.write_bytes(b"secret" * 1000)
    fd = os.open(path, os.O_RDONLY)  # a second handle sees the blocks as they were when the name went
    try:
        erase_file(path)
        assert not path.exists() and os.pread(fd, 6000, 0) == b"\0" * 6000
    finally:
        os.close(fd)


def modes(root):
    return {p.relative_to(root).as_posix(): stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("group_access, folder, file", [(False, 0o700, 0o600), (True, 0o750, 0o640)])
def test_a_gallery_is_private_to_its_owner_unless_the_group_is_asked_for(tmp_path, group_access, folder, file):
    data = synthetic_gallery(50, 2, 16, seed=1)
    root = tmp_path / "g"
    g = Gallery.from_vectors(data.vectors, data.identities, root, rows_per_shard=30, group_access=group_access,
                             progress=False)
    g.add_vectors(data.vectors[:3], ["extra"] * 3)
    g.remove([str(data.identities[0])])
    g.rebuild_index("flat")
    found = modes(root)
    assert {".", "shards", "index", "manifest.json", ".lock", ".readers"} <= found.keys()
    assert any(name.startswith("shards/") for name in found) and any(name.startswith("index/") for name in found)
    for name, mode in found.items():
        assert mode == (folder if (root / name).is_dir() else file), (name, oct(mode))


def test_a_new_gallery_in_an_existing_world_readable_folder_becomes_private(tmp_path):
    root = tmp_path / "g"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    Gallery.from_vectors(np.eye(4, 8, dtype=np.float32), list("abcd"), root, progress=False)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in root.rglob("*"))


@pytest.mark.parametrize("x", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.zeros((0, 512), np.float32),
    np.arange(10, dtype=np.int64)[::2],
], ids=["matrix", "empty", "strided"])
def test_a_npy_the_store_writes_is_the_file_np_save_writes(tmp_path, x):
    save_npy(tmp_path / "a.npy", x)
    np.save(tmp_path / "b.npy", x, allow_pickle=False)
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    assert np.array_equal(np.load(tmp_path / "a.npy", mmap_mode="r"), x)
