"""Run as a script by test_fault_tolerance.py: scoring on a 3-node cluster on this machine, one node lost.

A head with no CPUs and two worker nodes (``ray.cluster_utils.Cluster``). Once an encoder actor is alive on
each worker node (Ray's state API) and two shards are recorded, one worker node is killed; the run finishes
on the node left (3 CPUs: both encoder actors and a decode task fit). Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import warnings

import ray
from ray.cluster_utils import Cluster

from rmd_ray.core import CovarianceConfig
from rmd_ray.distributed.scoring.run import EncoderSpec, ExtractConfig, run_scoring
from rmd_ray.io import storage


def encoder_actor_nodes() -> set[str]:
    """Nodes holding a live encoder actor now (empty if the state API does not answer)."""
    from ray.util.state import list_actors

    try:
        actors = list_actors(filters=[("state", "=", "ALIVE")], limit=1000, raise_on_missing_output=False)
    except Exception:  # noqa: BLE001 - the state API may time out on a loaded machine: poll again
        return set()
    return {a.node_id for a in actors if "EmbedActor" in (a.class_name or "") and a.node_id}


def kill_a_node_once_both_embed(cluster: Cluster, workers: list, output: str, removed: dict) -> None:
    """Remove the second worker node (not gracefully) once both nodes hold an encoder actor and the run has
    written two shard records."""
    shards = storage.join(output, "features.parquet", "_shards")
    deadline = time.time() + 240
    nodes: set[str] = set()
    while time.time() < deadline:
        nodes |= encoder_actor_nodes()
        if len(nodes) == 2 and len(storage.list_files(shards)) >= 2:
            break
        time.sleep(0.2)
    removed.update(actor_nodes=sorted(nodes), records_at_removal=len(storage.list_files(shards)))
    cluster.remove_node(workers[1], allow_graceful=False)
    removed["node"] = workers[1].node_id


def main(source: str, output: str, encoder: str, image_size: int) -> None:
    warnings.simplefilter("ignore")
    t0 = time.monotonic()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=3), cluster.add_node(num_cpus=3)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    os.environ["RAY_ADDRESS"] = cluster.address  # the state API: this cluster, whatever else runs here
    ray.data.DataContext.get_current().enable_progress_bars = False
    removed: dict = {}
    threading.Thread(target=kill_a_node_once_both_embed, args=(cluster, workers, output, removed),
                     daemon=True).start()
    started = time.monotonic()
    result = run_scoring(
        source, output_dir=output, encoder=EncoderSpec(encoder, image_size=image_size),
        # a block that lived on the removed node can stall Ray Data: 45 s without output -> resume
        extract=ExtractConfig(batch_size=8, num_actors=2, write_rows=16, stall_seconds=45.0),
        covariance=CovarianceConfig(shrinkage="ridge"), shard_rows=16,
    )
    print(json.dumps({
        "worker_nodes": [w.node_id for w in workers], "removed": removed, "rows_in": result.rows_in,
        "rows_scored": result.rows_scored, "stages": result.seconds,
        "seconds": {"cluster": started - t0, "run": time.monotonic() - started},
    }))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
