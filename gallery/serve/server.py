"""Starting the service: refuse to run open by accident, load the gallery, bind, hand the socket to uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import socket
from pathlib import Path
from typing import Callable, Optional

import uvicorn

from ..errors import GalleryError
from .app import create_app
from .keys import KeyStore, default_keys_path
from .limits import Limits
from .live import LiveGallery
from .service import warm_up

LOG = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening (``port=0``: a free port, read it from the socket)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=1024)
    except OSError as e:
        raise GalleryError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    # Accepted connections inherit it: without it a keep-alive client waits ~40 ms for each answer
    # (Nagle's algorithm holding the body back until the client's delayed ACK of the headers).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def serve(
    gallery_dir: Path | str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    keys_path: Optional[Path | str] = None,
    insecure_no_auth: bool = False,
    limits: Limits = Limits(),
    access_log: bool = False,
    gpu: Optional[bool] = None,
    on_listening: Optional[Callable[[str], None]] = None,
) -> None:
    """Serve ``gallery_dir`` on ``host:port`` until interrupted.

    Without any API key in ``keys_path`` (default: ``<gallery>/api-keys.json``) it refuses to start,
    unless ``insecure_no_auth``, which it then logs as a warning. ``on_listening(url)`` is called once
    the socket listens.
    """
    keys_path = Path(keys_path) if keys_path is not None else default_keys_path(gallery_dir)
    store: Optional[KeyStore] = KeyStore(keys_path)
    if insecure_no_auth:
        LOG.warning("authentication is OFF (--insecure-no-auth): anyone who can reach %s:%s may search, enrol, remove "
                    "and calibrate", host, port)
        if not is_loopback(host):
            LOG.warning("%s is not a loopback address: this unauthenticated service is reachable from the network", host)
        store = None
    elif not store.keys():
        raise GalleryError(f"{keys_path}: no API keys, so every request would be refused; create one with "
                           f"`gallery keys create --role admin -g {gallery_dir}`, or pass --insecure-no-auth "
                           f"to serve without authentication")
    elif store.loose_permissions():
        LOG.warning("%s can be read by others than its owner; chmod 600 it", keys_path)
    live = LiveGallery(gallery_dir, gpu=gpu)
    warm_up(live)
    app = create_app(live, store, limits)
    sock = listening_socket(host, port)
    bound = sock.getsockname()
    url = f"http://{f'[{bound[0]}]' if ':' in bound[0] else bound[0]}:{bound[1]}"
    level = logging.getLevelName(min(logging.getLogger().getEffectiveLevel(), logging.WARNING)).lower()
    config = uvicorn.Config(app, access_log=access_log, log_level=level, lifespan="off", server_header=False,
                            timeout_graceful_shutdown=10)
    if on_listening is not None:
        on_listening(url)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn has shut down gracefully, then re-raises the Ctrl-C it caught
        LOG.info("stopped")
