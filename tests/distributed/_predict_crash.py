"""Run as a script by test_fault_tolerance.py: a training driver that dies while it predicts, and its rerun.

``crash``: trains one epoch on this machine's own Ray instance, then SIGKILLs itself once two shards of the
test predictions have their completion records (a driver killed mid-prediction). ``rerun``: the same call
again. Prints one JSON line: the epochs the workers started, the test shards' completion records, and (rerun)
the predicted ids.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import warnings

from _multinode_training import colour_table

from rmd_ray.distributed.inference import pipeline
from rmd_ray.distributed.training import TrainConfig, run_training
from rmd_ray.io.parts import read_table
from rmd_ray.nn.engine import OptimConfig


class EpochLog:
    """Epoch hook: append each started epoch to a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, epoch: int) -> None:
        with open(self.path, "a") as fh:
            fh.write(f"{epoch}\n")


def records(shards_dir: str) -> dict[str, str]:
    """Shard -> the attempt its completion record names."""
    if not os.path.isdir(shards_dir):
        return {}
    out = {}
    for name in sorted(os.listdir(shards_dir)):
        if name.endswith(".json") and not name.startswith("."):
            with open(os.path.join(shards_dir, name)) as fh:
                record = json.load(fh)
            out[str(record["shard"])] = record["attempt"]
    return out


def main(mode: str, output: str) -> None:
    warnings.simplefilter("ignore")
    os.makedirs(output, exist_ok=True)
    log_path = os.path.join(output, f"epochs_{mode}.log")
    open(log_path, "w").close()
    shards_dir = os.path.join(output, "run", "predictions_test.parquet", "_shards")
    if mode == "crash":
        write_record = pipeline.record

        def record_then_die(features_dir, shard, **kwargs):
            write_record(features_dir, shard, **kwargs)
            if "predictions_test" in features_dir and len(records(shards_dir)) >= 2:
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: as a killed driver

        pipeline.record = record_then_die
    config = TrainConfig(loss="ce", width=0.125, batch_size=32, cpus_per_worker=0.5, shuffle="seeded",
                         optim=OptimConfig(lr=0.1, epochs=1))
    test = colour_table(128, 2)
    result = run_training(colour_table(128, 0), val=colour_table(64, 1), test=test, config=config,
                          output_dir=output, run_name="run", epoch_hook=EpochLog(log_path), shard_rows=16)
    print(json.dumps({
        "started": open(log_path).read().split(),
        "epochs": [e["epoch"] for e in result.epochs],
        "records": records(shards_dir),
        "predicted_ids": read_table(result.predictions["test"]).column("id").to_pylist(),
        "test_ids": test.column("id").to_pylist(),
    }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
