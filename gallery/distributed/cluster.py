"""Joining a Ray cluster: the one given (``address`` or ``RAY_ADDRESS``), else a local one on this machine."""

from __future__ import annotations

import os
from typing import Optional

from . import require_ray


def connect(address: Optional[str] = None, *, num_cpus: Optional[int] = None):
    """Initialise Ray in this process once and return the ``ray`` module.

    An already initialised Ray (e.g. a test session's cluster, or the caller's own ``ray.init``) is
    used as it is. A new local cluster starts without its dashboard and never reports usage stats,
    since gallery machines may have no internet.
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return ray


def cluster_cpus() -> float:
    """CPUs the connected cluster offers (its total, not what is free now)."""
    ray = require_ray()
    return float(ray.cluster_resources().get("CPU", 1.0))


def cluster_gpus() -> int:
    ray = require_ray()
    return int(ray.cluster_resources().get("GPU", 0))
