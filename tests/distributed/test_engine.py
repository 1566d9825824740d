"""Choosing the engine: Ray stays optional, and the cluster the tests start listens on loopback only."""

import os
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from gallery import Gallery
from gallery.cli import main
from gallery.errors import GalleryError, InvalidInputError

pytestmark = pytest.mark.timeout(300)


def test_the_core_never_imports_ray(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from gallery import Gallery
        from gallery.cli import main
        g = Gallery.from_vectors(np.eye(4, dtype=np.float32), list("aabb"), {str(tmp_path / 'g')!r}, progress=False)
        g.search(np.eye(4, dtype=np.float32), k=1)
        assert "ray" not in sys.modules, "ray was imported"
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_ray_the_ray_engine_is_a_one_line_error_with_the_install_command(built, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as without the extra
    with pytest.raises(GalleryError, match=r"pip install 'gallery\[ray\]'"):
        Gallery.open(built.root, engine="ray", shards=2)
    result = CliRunner().invoke(main, ["search-vectors", "q.npy", "-g", str(built.root), "--engine", "ray"])
    assert result.exit_code != 0
    with pytest.raises(GalleryError, match=r"pip install 'gallery\[ray\]'"):
        Gallery.from_photos("photos", built.root.parent / "new", engine="ray")
    assert not (built.root.parent / "new").exists()


def test_unknown_engine_and_shards_without_ray_are_refused(built):
    with pytest.raises(InvalidInputError, match="unknown engine 'spark'"):
        Gallery.open(built.root, engine="spark")
    with pytest.raises(InvalidInputError, match="shards=4 needs engine='ray'"):
        Gallery.open(built.root, shards=4)


def _listening_sockets() -> dict[int, str]:
    """Socket inode -> local address of every listening TCP socket in this network namespace."""
    out = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    out[int(fields[9])] = fields[1].split(":")[0]
    return out


def _is_loopback(hex_address: str) -> bool:
    if len(hex_address) == 8:  # IPv4, little-endian: 127.x.x.x ends in 7F
        return hex_address.endswith("7F")
    v4_mapped = hex_address.startswith("0000000000000000FFFF0000")
    return (v4_mapped and hex_address.endswith("7F")) or hex_address == "00000000000000000000000001000000"


def _ray_pids() -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "ray" in cmd.lower() or int(pid) == os.getpid():
            pids.append(int(pid))
    return pids


def _only_loopback_here() -> bool:
    with open("/proc/net/dev") as f:
        return [line.split(":")[0].strip() for line in f.readlines()[2:]] == ["lo"]


@pytest.mark.skipif(not _only_loopback_here(), reason="needs the loopback-only network namespace .ci/run makes (unshare -n, as root)")
def test_every_ray_listening_socket_is_on_loopback(ray_cluster):
    @ray_cluster.remote(num_cpus=0.25)
    def ping():
        return os.getpid()

    ray_cluster.get(ping.remote())
    listening = _listening_sockets()
    found = {}
    for pid in _ray_pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and int(target[8:-1]) in listening:
                found[(pid, fd)] = listening[int(target[8:-1])]
    assert len(found) >= 3, found  # at least the GCS, the raylet and this driver listen
    assert all(_is_loopback(a) for a in found.values()), found
