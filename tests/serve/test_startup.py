"""Starting `gallery serve`: the web stack stays optional, auth is on unless switched off out loud, loopback by default."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from gallery import Gallery
from gallery.cli import main

pytestmark = pytest.mark.timeout(300)

WEB_STACK = ("fastapi", "starlette", "uvicorn", "pydantic", "python_multipart", "multipart", "swagger_ui_bundle", "httpx")


@pytest.fixture
def vectors_gallery(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 16)).astype(np.float32)
    return Gallery.from_vectors(x, [f"id{i // 2}" for i in range(40)], tmp_path / "g", progress=False)


def test_the_core_never_imports_the_web_stack(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from click.testing import CliRunner
        from gallery import Gallery
        from gallery.cli import main
        g = Gallery.from_vectors(np.eye(4, dtype=np.float32), list("aabb"), {str(tmp_path / 'g')!r}, progress=False)
        g.search(np.eye(4, dtype=np.float32), k=1)
        assert CliRunner().invoke(main, ["keys", "create", "--role", "search", "-g", {str(tmp_path / 'g')!r}]).exit_code == 0
        loaded = [m for m in {WEB_STACK!r} if m in sys.modules]
        assert not loaded, f"imported {{loaded}}"
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_the_serve_extra_gallery_serve_is_a_one_line_error_naming_the_install_command(vectors_gallery, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi now fails, as without the extra
    result = CliRunner().invoke(main, ["serve", "-g", str(vectors_gallery.root), "--insecure-no-auth"])
    assert result.exit_code == 1
    assert result.output == ("Error: gallery serve needs the serve extra, which is not installed (fastapi is missing): "
                             "pip install 'gallery[serve]'\n")


def test_a_server_without_keys_refuses_to_start(vectors_gallery):
    pytest.importorskip("fastapi")
    from servers import serve_command, server_env

    run = subprocess.run(serve_command(vectors_gallery.root), env=server_env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "on http://" not in run.stdout
    message = run.stderr.strip()
    assert "\n" not in message and "no API keys" in message
    assert "gallery keys create --role admin" in message and "--insecure-no-auth" in message


def socket_addresses(pid: int) -> list[str]:
    """Local addresses of the TCP sockets process ``pid`` listens on (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}") if os.path.exists(f"/proc/{pid}/fd/{fd}") else ""
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and int(fields[9]) in inodes:
                    out.append(fields[1].split(":")[0])
    return out


def test_insecure_no_auth_serves_everyone_says_so_and_listens_on_loopback_only(vectors_gallery):
    pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from servers import start_server

    server = start_server(vectors_gallery.root, "--insecure-no-auth")
    try:
        assert "authentication is OFF (--insecure-no-auth)" in server.output()
        with server.client() as anyone:
            assert anyone.get("/v1/auth").json() == {"auth": False, "key": None, "name": None, "role": "admin"}
            assert anyone.get("/v1/info").json()["records"] == 40
            x = vectors_gallery.vectors_of(np.array([0]))
            assert anyone.post("/v1/search/vectors", json={"vectors": x.tolist(), "k": 1}).json()["results"][0]["identity"] == "id0"
            r = anyone.get("/v1/keys")
            assert r.status_code == 409 and "--insecure-no-auth" in r.json()["error"]
            png = io.BytesIO()
            Image.new("RGB", (64, 64)).save(png, format="PNG")
            photos = anyone.post("/v1/search/photos", files=[("photos", ("a.png", png.getvalue()))])
            assert photos.status_code == 422 and "search it with vectors" in photos.json()["error"]
        assert socket_addresses(server.process.pid) == ["0100007F"]  # 127.0.0.1, nothing else
    finally:
        server.stop()
    assert server.process.returncode == 0  # a clean shutdown on Ctrl-C
