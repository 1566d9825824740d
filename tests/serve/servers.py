"""Real `gallery serve` processes for the tests: what a user runs, ``python -m gallery.cli serve ... --port 0``,
in its own process on 127.0.0.1, reached over HTTP with httpx; its output goes to a log file the tests read.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import httpx

from gallery.serve.keys import KeyStore

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"gallery serve: .* on (http://127\.0\.0\.1:\d+)")
STARTUP_SECONDS = 90


@dataclass
class RunningServer:
    """A `gallery serve` process: its URL, the key of each role, and its log."""

    url: str
    root: Path
    process: subprocess.Popen
    log: Path
    keys: dict[str, str] = field(default_factory=dict)

    def client(self, role: Optional[str] = None, **kw) -> "httpx.Client":
        headers = {"Authorization": f"Bearer {self.keys[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kw)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def server_env() -> dict:
    """The test's environment, with this checkout first on the path (the code under test, not an install)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def serve_command(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "gallery.cli", "serve", "-g", str(root), "--port", "0", *args]


def start_server(root: Path, *args: str, keys: Optional[dict[str, str]] = None) -> RunningServer:
    """Start `gallery serve` on a free port of 127.0.0.1 and wait until it answers its health probe."""
    log = root.parent / f"{root.name}-serve-{time.monotonic_ns()}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(serve_command(root, *args), stdout=out, stderr=subprocess.STDOUT, env=server_env())
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        found = LISTENING.search(log.read_text(errors="replace"))
        if found:
            server = RunningServer(found.group(1), root, process, log, dict(keys or {}))
            with httpx.Client(base_url=server.url, timeout=5) as c:
                while time.monotonic() < deadline:
                    try:
                        if c.get("/v1/health").status_code == 200:
                            return server
                    except httpx.TransportError:
                        time.sleep(0.1)
        if process.poll() is not None:
            raise AssertionError(f"gallery serve exited with {process.returncode}:\n{log.read_text()}")
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"gallery serve did not start within {STARTUP_SECONDS} s:\n{log.read_text()}")


def make_keys(root: Path) -> dict[str, str]:
    store = KeyStore(root / "api-keys.json")
    return {role: store.create(role, name=f"test {role}")[0] for role in ("search", "enrol", "admin")}


