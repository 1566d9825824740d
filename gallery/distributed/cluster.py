"""Joining a Ray cluster: the one given (``address`` or ``RAY_ADDRESS``), else a local one on this machine.

A local cluster listens on loopback only. Ray turns a node address of ``127.0.0.1`` into the
machine's network address unless its cluster mode is off (what it does on macOS and Windows), and its
servers (GCS, raylet and object manager, workers, agents) bind all interfaces unless the node address
is loopback; so :func:`start_local_cluster` turns cluster mode off while the cluster starts.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from contextlib import contextmanager
from typing import Iterator, Optional

from . import require_ray

LOG = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
#: Ray's switch for multi-node clusters; "0" makes it pick the loopback address for a node.
_CLUSTER_MODE_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def connect(address: Optional[str] = None, *, num_cpus: Optional[int] = None):
    """Initialise Ray in this process once and return the ``ray`` module.

    An already initialised Ray (e.g. a test session's cluster, or the caller's own ``ray.init``) is
    used as it is. Without ``address`` or ``RAY_ADDRESS``, :func:`start_local_cluster` starts one.
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not address:
        return start_local_cluster(num_cpus=num_cpus)
    if _is_loopback_address(address):  # a loopback cluster (another process's local one): join it on loopback
        with _cluster_mode_off(ray):
            ray.init(address=address, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    return ray


def _is_loopback_address(address: str) -> bool:
    """Whether ``address`` (``host:port``) is on loopback; Ray would otherwise swap it for the network address."""
    if "://" in address:
        return False
    if address.startswith("[") and "]" in address:  # [::1]:6379
        host = address[1 : address.index("]")]
    else:
        host = address.split(":")[0] if address.count(":") == 1 else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def start_local_cluster(*, num_cpus: Optional[int] = None):
    """Start a single-machine Ray cluster that listens on 127.0.0.1 only; return the ``ray`` module.

    Nothing on the network can reach it: its ports are open to local processes only. It starts without
    its dashboard and never reports usage stats, since gallery machines may have no internet. Other
    machines cannot join it; for a multi-node cluster, start one with ``ray start`` and pass its address.

    >>> ray = start_local_cluster(num_cpus=2)  # doctest: +SKIP
    >>> ray.get_runtime_context().gcs_address  # doctest: +SKIP
    '127.0.0.1:...'
    """
    ray = require_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with _cluster_mode_off(ray):
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, _node_ip_address=LOOPBACK)
    node_ip = ray.util.get_node_ip_address()
    if node_ip != LOOPBACK:  # a Ray release that resolves the address differently
        LOG.warning("the local Ray cluster runs on %s, not %s, so its ports may be reachable from the network; "
                    "run in a network namespace (unshare -n) or behind a firewall", node_ip, LOOPBACK)
    return ray


@contextmanager
def _cluster_mode_off(ray) -> Iterator[None]:
    """Ray's cluster mode off for this process (read at import, so set on the module) and for the
    processes ``ray.init`` starts (the environment they inherit); both restored afterwards, so a later
    connection to a real cluster from this process finds its network address again."""
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    had = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    env = os.environ.get(_CLUSTER_MODE_VAR)
    os.environ[_CLUSTER_MODE_VAR] = "0"
    if had is not None:
        constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if had is not None:
            constants.ENABLE_RAY_CLUSTER = had
        if env is None:
            os.environ.pop(_CLUSTER_MODE_VAR, None)
        else:
            os.environ[_CLUSTER_MODE_VAR] = env


def cluster_cpus() -> float:
    """CPUs the connected cluster offers (its total, not what is free now)."""
    ray = require_ray()
    return float(ray.cluster_resources().get("CPU", 1.0))


def cluster_gpus() -> int:
    ray = require_ray()
    return int(ray.cluster_resources().get("GPU", 0))
