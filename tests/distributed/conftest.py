"""One local Ray cluster for the whole test session: 2 CPUs, no dashboard, no usage reporting.

Actors and tasks ask for fractions of a CPU, so shard actors, encoder actors and alignment tasks fit
together on a 2-core machine.
"""

import os

import pytest


@pytest.fixture(scope="session")
def ray_cluster(private_model_cache):
    import ray

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
