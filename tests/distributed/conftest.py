"""One local Ray cluster for the whole test session, started as gallery starts one: 2 CPUs, loopback
only, no dashboard, no usage reporting.

Actors and tasks ask for fractions of a CPU, so shard actors, encoder actors and alignment tasks fit
together on a 2-core machine.
"""

import os

import pytest

#: Ray swaps a 127.0.0.1 address for the machine's network address unless this is "0"; child processes
#: that join the session's cluster with a bare ``ray.init(address=...)`` inherit it.
CLUSTER_MODE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@pytest.fixture(scope="session")
def ray_cluster(private_model_cache):
    from gallery.distributed.cluster import start_local_cluster

    before = os.environ.get(CLUSTER_MODE)
    os.environ[CLUSTER_MODE] = "0"
    ray = start_local_cluster(num_cpus=2)
    yield ray
    ray.shutdown()
    if before is None:
        os.environ.pop(CLUSTER_MODE, None)
    else:
        os.environ[CLUSTER_MODE] = before
