"""Run as a script by test_fault_tolerance.py: scoring on a 3-node cluster on this machine.

A head with no CPUs and two worker nodes (``ray.cluster_utils.Cluster``); prints one JSON line.
``plain``: one run, the nodes its encoder actors ran on. ``remove``: a run during which one worker
node is killed; it finishes on the node left (3 CPUs: both encoder actors and a decode task fit).
"""

from __future__ import annotations

import json
import sys
import threading
import time
import warnings

import ray
from ray.cluster_utils import Cluster

from rmd_ray.core import CovarianceConfig
from rmd_ray.distributed.scoring.run import EncoderSpec, ExtractConfig, run_scoring
from rmd_ray.io import storage
from rmd_ray.io.parts import read_table


def main(mode: str, source: str, output: str, encoder: str, image_size: int) -> None:
    warnings.simplefilter("ignore")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=3), cluster.add_node(num_cpus=3)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    worker_ids = [w.node_id for w in workers]
    kwargs = dict(
        output_dir=output,
        encoder=EncoderSpec(encoder, image_size=image_size),
        # a block that lived on the removed node can stall Ray Data: 45 s without output -> resume
        extract=ExtractConfig(batch_size=8, num_actors=2, write_rows=16, stall_seconds=45.0),
        covariance=CovarianceConfig(shrinkage="ridge"),
        shard_rows=16,
    )
    removed = {}
    if mode == "remove":
        def kill_one_node() -> None:
            shards = storage.join(output, "features.parquet", "_shards")
            deadline = time.time() + 240
            while time.time() < deadline and len(storage.list_files(shards)) < 2:
                time.sleep(0.05)
            removed["records_at_removal"] = len(storage.list_files(shards))
            cluster.remove_node(workers[1], allow_graceful=False)
            removed["node"] = worker_ids[1]

        thread = threading.Thread(target=kill_one_node, daemon=True)
        thread.start()
    result = run_scoring(source, **kwargs)
    scores = read_table(result.scores_path)
    print(json.dumps({
        "worker_nodes": worker_ids,
        "actor_nodes": list(result.nodes),
        "removed": removed,
        "rows_in": result.rows_in,
        "rows_scored": result.rows_scored,
        "ids": scores.column("id").to_pylist(),
        "rmd": scores.column("rmd").to_pylist(),
    }))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
