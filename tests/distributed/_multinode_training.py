"""Run as a script by test_fault_tolerance.py: training on a 3-node cluster on this machine.

A head with no CPUs and two worker nodes of 3 CPUs (``ray.cluster_utils.Cluster``); two Ray Train
workers placed with ``SPREAD`` (one per node). Once epoch 2 has started on both ranks (epoch 1's
checkpoint is in), the node of one training worker (not the one of the Train controller) is
killed; Ray Train restarts the group on the node left from the last checkpoint, and the run ends
with the test split predicted by the model actors. Prints one JSON line.
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
from ray.cluster_utils import Cluster

from rmd_ray.data.readers import from_arrays
from rmd_ray.distributed.training import TrainConfig, run_training
from rmd_ray.io.parts import read_table
from rmd_ray.nn.engine import OptimConfig

K = 4
COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30]])


def colour_table(n: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, n)
    images = rng.integers(0, 90, (n, 16, 16, 3)) + 0.6 * COLOURS[labels][:, None, None, :]
    return from_arrays(np.clip(images, 0, 255).astype(np.uint8), labels, ids=[f"s{seed}_{i:03d}" for i in range(n)],
                       classes=["red", "green", "blue", "yellow"])


class NodeLog:
    """Epoch hook: append ``epoch rank node`` to a file (the driver's watcher reads it)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, epoch: int) -> None:
        rank = ray.train.get_context().get_world_rank()
        node = ray.get_runtime_context().get_node_id()
        with open(self.path, "a") as fh:
            fh.write(f"{epoch} {rank} {node}\n")
        # keep epoch 2 open while the controller registers epoch 1's checkpoint (it polls every 2 s) and
        # the node goes
        time.sleep(20.0 if epoch == 1 else 0.5)


def _controller_node() -> str | None:
    from ray.util.state import list_actors

    for actor in list_actors(filters=[("state", "=", "ALIVE")]):
        if "TrainController" in (actor.class_name or ""):
            return actor.node_id
    return None


def main(output: str) -> None:
    warnings.simplefilter("ignore")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = {}
    for _ in range(2):
        node = cluster.add_node(num_cpus=3)
        workers[node.node_id] = node
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    log_path = os.path.join(output, "epochs.log")
    os.makedirs(output, exist_ok=True)
    removed: dict = {}

    def kill_one_node() -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            lines = open(log_path).read().split() if os.path.exists(log_path) else []
            rows = [lines[i : i + 3] for i in range(0, len(lines) - 2, 3)]
            started = {(int(e), int(r)): n for e, r, n in rows}
            if (1, 0) in started and (1, 1) in started:
                # wait until the controller has registered epoch 1's checkpoint (its snapshot names it):
                # a fixed delay was not enough on a loaded machine; the hook keeps epoch 2 open meanwhile
                snapshot = os.path.join(output, "multinode", "checkpoint_manager_snapshot.json")
                registered = time.time() + 120
                while time.time() < registered and not (
                    os.path.exists(snapshot) and "epoch_0001" in open(snapshot).read()
                ):
                    time.sleep(0.2)
                removed["registered"] = os.path.exists(snapshot) and "epoch_0001" in open(snapshot).read()
                controller = _controller_node()
                nodes = {started[(1, 0)], started[(1, 1)]}
                victim = next((n for n in sorted(nodes) if n != controller and n in workers), None)
                if victim is None:
                    removed["error"] = f"no worker node without the controller: {nodes} / {controller}"
                    return
                removed.update(node=victim, training_nodes=sorted(nodes), controller=controller)
                cluster.remove_node(workers[victim], allow_graceful=False)
                return
            time.sleep(0.05)
        removed["error"] = "epoch 2 never started on both ranks"

    threading.Thread(target=kill_one_node, daemon=True).start()
    config = TrainConfig(
        loss="ce", width=0.125, batch_size=32, num_workers=2, cpus_per_worker=1.0, placement_strategy="SPREAD",
        optim=OptimConfig(lr=0.1, epochs=3), max_failures=3, shuffle="seeded",
    )
    test = colour_table(96, 2)
    result = run_training(colour_table(256, 0), val=colour_table(64, 1), test=test, config=config,
                          output_dir=output, run_name="multinode", epoch_hook=NodeLog(log_path))
    predictions = read_table(result.predictions["test"])
    print(json.dumps({
        "removed": removed,
        "epochs": [e["epoch"] for e in result.epochs],
        "resumed_from": [e["resumed_from"] for e in result.epochs],
        "hook": open(log_path).read().split("\n"),
        "predicted_ids": predictions.column("id").to_pylist(),
        "test_ids": test.column("id").to_pylist(),
        "val_acc": result.final_val["acc"],
    }))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
