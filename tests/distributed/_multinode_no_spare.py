"""Run as a script by test_fault_tolerance.py: a training node lost with no spare capacity.

A head with no CPUs and two worker nodes of 2 CPUs; two Ray Train workers of 1.5 CPUs (SPREAD: one per
node), so neither node can hold a second worker. Once epoch 1's checkpoint is registered, the node of
rank 1 is removed and not replaced. Modes:

- ``stop`` (a fixed group): ``run_training`` must raise ``WorkerCapacityError`` within its
  ``placement_timeout_s`` (plus one start attempt); the script loads the checkpoint it names, adds a node
  and reruns the same call, which continues from that checkpoint.
- ``elastic`` (``min_workers=1``): the run goes on with the worker left and finishes.

Prints one JSON line. The test sets ``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S`` low so start attempts are short.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import warnings

import ray
import torch
from _multinode_training import colour_table
from ray.cluster_utils import Cluster

from rmd_ray.distributed.training import TrainConfig, run_training
from rmd_ray.nn.engine import OptimConfig


class HeldEpochLog:
    """Epoch hook: append ``epoch rank node``; epoch 2 of the first group waits until the node is gone, so
    the loss lands after epoch 1's checkpoint and before epoch 2's."""

    def __init__(self, path: str, removed_marker: str) -> None:
        self.path, self.removed_marker = path, removed_marker

    def __call__(self, epoch: int) -> None:
        rank = ray.train.get_context().get_world_rank()
        with open(self.path, "a") as fh:
            fh.write(f"{epoch} {rank} {ray.get_runtime_context().get_node_id()}\n")
        deadline = time.time() + 120
        while epoch == 1 and not os.path.exists(self.removed_marker) and time.time() < deadline:
            time.sleep(0.2)


def _started(log_path: str) -> list[tuple[int, int, str]]:
    words = open(log_path).read().split() if os.path.exists(log_path) else []
    return [(int(words[i]), int(words[i + 1]), words[i + 2]) for i in range(0, len(words) - 2, 3)]


def remove_after_epoch_1(cluster: Cluster, workers: dict, output: str, removed: dict) -> None:
    """Once both ranks started epoch 2 and Ray Train registered epoch 1's checkpoint, remove rank 1's node."""
    log_path, marker = os.path.join(output, "epochs.log"), os.path.join(output, "removed")
    snapshot = os.path.join(output, "run", "checkpoint_manager_snapshot.json")
    deadline = time.time() + 300
    while time.time() < deadline:
        started = {(e, r): n for e, r, n in _started(log_path)}
        registered = os.path.exists(snapshot) and "epoch_0001" in open(snapshot).read()
        if (1, 0) in started and (1, 1) in started and registered:
            victim = started[(1, 1)]
            removed.update(node=victim, kept=started[(1, 0)])
            if victim == removed["kept"] or victim not in workers:
                removed["error"] = f"ranks not on two worker nodes: {started}"
                return
            cluster.remove_node(workers[victim], allow_graceful=False)
            removed["at"] = time.monotonic()
            open(marker, "w").close()
            return
        time.sleep(0.1)
    removed["error"] = "epoch 2 never started on both ranks with epoch 1 registered"


def main(mode: str, output: str) -> None:
    warnings.simplefilter("ignore")
    t0 = time.monotonic()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = {}
    for _ in range(2):
        node = cluster.add_node(num_cpus=2)
        workers[node.node_id] = node
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    os.makedirs(output, exist_ok=True)
    log_path = os.path.join(output, "epochs.log")
    removed: dict = {}
    threading.Thread(target=remove_after_epoch_1, args=(cluster, workers, output, removed), daemon=True).start()
    config = TrainConfig(
        loss="ce", width=0.125, batch_size=32, num_workers=2, cpus_per_worker=1.5, decode_tasks=1,
        placement_strategy="SPREAD", optim=OptimConfig(lr=0.1, epochs=3), max_failures=2, shuffle="seeded",
        # elastic: Ray first retries the old size until its view of the cluster refreshes (every 20 s), and
        # that wait counts against placement_timeout_s
        min_workers=1 if mode == "elastic" else None, placement_timeout_s=15.0 if mode == "stop" else 120.0,
    )

    def train():  # the same call every time, as a rerun of the same command would make it
        return run_training(colour_table(256, 0), val=colour_table(64, 1), config=config, output_dir=output,
                            run_name="run", epoch_hook=HeldEpochLog(log_path, os.path.join(output, "removed")),
                            predict=False)

    out: dict = {"removed": removed, "seconds": {}}
    try:
        result = train()
    except Exception as err:  # noqa: BLE001 - the stop mode's expected end: reported, then checked by the test
        out["error"] = {"type": type(err).__name__, "message": str(err), "after_loss_s":
                        time.monotonic() - removed.get("at", time.monotonic())}
        checkpoint = getattr(err, "checkpoint", None)
        if checkpoint is not None:
            payload = torch.load(os.path.join(checkpoint, "model.pt"), map_location="cpu", weights_only=True)
            out["checkpoint"] = {"path": checkpoint, "epoch": payload["epoch"], "keys": sorted(payload)}
        out["hook_before_rerun"] = len(_started(log_path))
        out["seconds"]["stopped"] = time.monotonic() - t0
        cluster.add_node(num_cpus=2)  # room again: the same call continues from the checkpoint
        cluster.wait_for_nodes()
        result = train()
    out.update(
        epochs=[e["epoch"] for e in result.epochs], resumed_from=[e["resumed_from"] for e in result.epochs],
        workers=[e["workers"] for e in result.epochs], lr=[e["lr"] for e in result.epochs],
        train_loss=[e["train_loss"] for e in result.epochs], val_acc=result.final_val["acc"],
        last_checkpoint=result.last_checkpoint, hook=_started(log_path),
    )
    out["seconds"].update(node_lost=removed.get("at", t0) - t0, finished=time.monotonic() - t0)
    print(json.dumps(out))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
