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


def _descendants_running_ray() -> list[int]:
    """This process and every process below it that runs Ray: this session's cluster, not another one
    that may be running on the same machine."""
    parent = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parent[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    mine = {os.getpid()}
    grew = True
    while grew:
        below = {pid for pid, ppid in parent.items() if ppid in mine} - mine
        mine |= below
        grew = bool(below)
    pids = []
    for pid in sorted(mine):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "ray" in cmd.lower() or pid == os.getpid():
            pids.append(pid)
    return pids


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads listening sockets from Linux's /proc")
def test_every_ray_listening_socket_is_on_loopback(ray_cluster):
    """Checked on whatever network this runs in: the host's too, where Ray would bind every interface."""
    @ray_cluster.remote(num_cpus=0.25)
    def ping():
        return os.getpid()

    @ray_cluster.remote(num_cpus=0.25)
    class Echo:
        def echo(self, x):
            return x

    ray_cluster.get(ping.remote())
    echo = Echo.remote()
    assert len(ray_cluster.get(echo.echo.remote(b"x" * 2_000_000))) == 2_000_000  # through the object store
    assert ray_cluster.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    listening = _listening_sockets()
    found = {}
    for pid in _descendants_running_ray():
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
    ray_cluster.kill(echo)
    assert len(found) >= 3, found  # at least the GCS, the raylet and this driver listen
    assert all(_is_loopback(a) for a in found.values()), found


CONNECT = """
import os, ray
from gallery.distributed.cluster import connect
connect(num_cpus=1)
print(ray.get_runtime_context().gcs_address, ray.util.get_node_ip_address())
print(os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"), ray._private.ray_constants.ENABLE_RAY_CLUSTER)
ray.shutdown()
"""


def test_connect_without_an_address_starts_a_loopback_cluster_and_leaves_ray_as_it_was():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    out = subprocess.run([sys.executable, "-c", CONNECT], env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    gcs, node = out.stdout.splitlines()[0].split()
    assert gcs.startswith("127.0.0.1:") and node == "127.0.0.1"
    assert out.stdout.splitlines()[1] == "None True"  # cluster mode back on for later connections


JOIN = """
import os, sys
from gallery.distributed.cluster import connect
ray = connect(sys.argv[1])
print(ray.get(ray.remote(num_cpus=0.25)(lambda: ray.util.get_node_ip_address()).remote(), timeout=120))
"""


def test_another_process_joins_the_loopback_cluster_by_its_address(ray_cluster):
    """Ray would swap 127.0.0.1 for the network address, where nothing listens; connect keeps it."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    address = ray_cluster.get_runtime_context().gcs_address
    out = subprocess.run([sys.executable, "-c", JOIN, address], env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["127.0.0.1"]
