"""Run as a script by test_logical_gpus.py: GPU placement on a cluster whose GPUs are logical.

A head with no CPUs, one worker node advertising 1 GPU (3 CPUs) and one CPU-only node (3 CPUs)
(``ray.cluster_utils.Cluster``), with ``RMD_RAY_FORCE_CPU=1`` so whatever gets a GPU computes on the
CPU. Scoring (encoder actors, GPU by default once the cluster has GPUs), training with
``use_gpu=True`` (one Ray Train worker) and its prediction of the validation split (model actors, a
GPU each) run; every live actor that holds a GPU is recorded from Ray's state API while the run goes on (dead
actors are listed too, after). Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import warnings

import numpy as np
import ray
from _multinode_training import colour_table  # noqa: E402 - a sibling script of the tests
from ray.cluster_utils import Cluster

from rmd_ray.distributed.scoring.run import EncoderSpec, ExtractConfig, run_scoring
from rmd_ray.distributed.training import TrainConfig, run_training
from rmd_ray.io.parts import read_table
from rmd_ray.nn.engine import OptimConfig


def _gpu_actors(seen: dict[str, dict]) -> None:
    from ray.util.state import list_actors

    for actor in list_actors(detail=True, limit=1000, raise_on_missing_output=False):
        # in a placement group (Ray Train's workers) the resource is named GPU_group_<index>_<group id>
        gpus = max([v for k, v in (actor.required_resources or {}).items() if k.split("_")[0] == "GPU"], default=0)
        if gpus > 0 and actor.node_id:
            seen[actor.actor_id] = {"class": actor.class_name, "node": actor.node_id, "gpu": gpus}


def main(output: str) -> None:
    warnings.simplefilter("ignore")
    os.environ["RMD_RAY_FORCE_CPU"] = "1"  # before the nodes start: their workers inherit it
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    gpu_node = cluster.add_node(num_cpus=3, num_gpus=1)
    cpu_node = cluster.add_node(num_cpus=3)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    os.environ["RAY_ADDRESS"] = cluster.address  # the state API: this cluster, whatever else runs here
    ray.data.DataContext.get_current().enable_progress_bars = False
    seen: dict[str, dict] = {}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                _gpu_actors(seen)
            except Exception:  # noqa: BLE001 - the state API may time out on a loaded machine: poll again
                pass
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start, timings = time.perf_counter(), {}
    scored = run_scoring(colour_table(32, 3), output_dir=os.path.join(output, "score"),
                         encoder=EncoderSpec("tiny_cnn"), extract=ExtractConfig(batch_size=16, write_rows=32))
    timings["score"] = time.perf_counter() - start
    print("scored", timings, file=sys.stderr, flush=True)
    config = TrainConfig(loss="ce", width=0.125, batch_size=32, num_workers=1, cpus_per_worker=1.0, use_gpu=True,
                         optim=OptimConfig(lr=0.1, epochs=1), max_failures=0)
    trained = run_training(colour_table(64, 0), val=colour_table(32, 1), config=config, output_dir=output,
                           run_name="gpus")
    stop.set()
    watcher.join()
    _gpu_actors(seen)
    timings["total"] = time.perf_counter() - start
    predictions = read_table(trained.predictions["val"])
    print(json.dumps({
        "gpu_node": gpu_node.node_id,
        "cpu_node": cpu_node.node_id,
        "encoder_nodes": list(scored.nodes),
        "rows_scored": scored.rows_scored,
        "gpu_actors": list(seen.values()),
        "predicted": predictions.num_rows,
        "logits_finite": bool(np.isfinite(np.stack(predictions.column("logits").to_numpy(zero_copy_only=False))).all()),
        "val_acc": trained.final_val["acc"],
        "seconds": timings,
    }))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
