"""One real two-node Ray cluster on this host for every Ray test of a run (``ray.cluster_utils.Cluster``).

Head and worker have 1 CPU each, so two trials or tasks run at once, one per node. The cluster is
shut down at the end of the run (no raylet left behind). Tests that kill the worker node add a fresh
one before they return, so the next test finds two nodes again.
"""

from __future__ import annotations

import functools
import os

import pytest

from recsys_rl.config import BaselineConfig, RayConfig, RunConfig, TrackingConfig, TrainConfig
from tests.recsys_rl.helpers import POLICY, SMALL

NODE = {"num_cpus": 1, "object_store_memory": 100 * 2**20}


class TwoNodes:
    def __init__(self):
        import ray
        from ray.cluster_utils import Cluster

        from recsys_rl.distributed.cluster import ray_env_vars

        env = ray_env_vars(RayConfig())
        os.environ.update(env)
        self.cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
        self.worker = self.cluster.add_node(**NODE)
        ray.init(address=self.cluster.address, runtime_env={"env_vars": env}, log_to_driver=False)
        self.head_id = self.cluster.head_node.node_id
        self.cluster.wait_for_nodes()

    def replace_worker(self):
        """Kill the worker node abruptly (no graceful drain) and start a fresh one in its place."""
        killed = self.worker
        self.cluster.remove_node(killed, allow_graceful=False)
        self.worker = self.cluster.add_node(**NODE)
        return killed.node_id

    def shutdown(self):
        import ray

        ray.shutdown()
        self.cluster.shutdown()


@pytest.fixture(scope="session")
def two_nodes():
    pytest.importorskip("ray", reason="the [ray] extra is part of [test]")
    nodes = TwoNodes()
    yield nodes
    nodes.shutdown()


def tiny_run(tmp, *, updates: int = 8, evaluations: int = 4) -> RunConfig:
    """A run small enough for a trial of a few seconds: 200 products, 512 impressions per update."""
    return RunConfig(
        sim=SMALL,
        policy=POLICY,
        baseline=BaselineConfig(logged_impressions=5000, epochs=1),
        train=TrainConfig(
            total_impressions=512 * updates,
            contexts_per_batch=128,
            banners_per_context=4,
            eval_users=256,
            minibatch_size=512,
            epochs=1,
        ),
        tracking=TrackingConfig(tracking_uri=f"sqlite:///{tmp}/mlflow.db", log_model=False),
        ray=RayConfig(storage_path=f"{tmp}/ray", evaluations=evaluations),
    )


@functools.cache
def tiny_reference():
    import tempfile

    from recsys_rl.baseline import train_baseline
    from recsys_rl.logdata.parquet import read_logs
    from simulator import Simulator
    from simulator.logged import generate_logs

    sim = Simulator(SMALL)
    d = tempfile.mkdtemp(prefix="ray-ref-")
    logs = read_logs(generate_logs(sim, 5000, f"{d}/logs", seed=0, progress=False))
    return train_baseline(
        logs, sim.n_products, POLICY, BaselineConfig(logged_impressions=5000, epochs=1), 0, False
    )
