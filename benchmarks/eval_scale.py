"""Evaluation at scale: the driver's memory must not grow with the number of predictions.

Writes predictions parts directories (``part-*.parquet`` + manifest, as
:func:`rmd_ray.distributed.prediction.predict.predict_source` writes them; 4,096 rows a part) of N and
4N rows of 1,000-class float32 logits, then, each in a fresh process:

- ``rmd-ray evaluate --predictions m=DIR`` (the streaming path: per-row summaries, batch by batch):
  peak RSS at 4N over N, target <= 1.15;
- the in-memory path a user would write instead (``load_predictions`` + ``evaluate_predictions``: the
  N x K logits as float64 on the driver): the same ratio, for comparison;
- the metrics of the two paths at N, which must agree to 1e-9.

Run: python benchmarks/eval_scale.py [--n 20000] [--classes 1000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, markdown_table, write_result  # noqa: E402

PART_ROWS = 4096

# peak RSS of the child (ru_maxrss, KiB on Linux) is printed last, as JSON with the metrics
STREAMING = """
import json, resource, sys, warnings
warnings.simplefilter("ignore")
from rmd_ray.evaluation.evaluate import evaluate_run
m = evaluate_run(sys.argv[1])["metrics"]
print(json.dumps({"metrics": m, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""
IN_MEMORY = """
import json, resource, sys, warnings
warnings.simplefilter("ignore")
from rmd_ray.core.metrics import evaluate_predictions
from rmd_ray.evaluation.evaluate import load_predictions
_, labels, logits = load_predictions(sys.argv[1])
m = evaluate_predictions(logits, labels)
print(json.dumps({"metrics": m, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

PATHS = {"streaming (evaluate_run, what rmd-ray evaluate runs)": STREAMING, "in memory (load + evaluate)": IN_MEMORY}


def write_predictions(folder: Path, n: int, k: int, *, seed: int) -> Path:
    """A parts directory of ``n`` rows: ids, labels, plausible float32 logits (about 70% right)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rmd_ray.io.parts import write_manifest

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    names = []
    for i, start in enumerate(range(0, n, PART_ROWS)):
        rows = min(PART_ROWS, n - start)
        labels = rng.integers(0, k, rows)
        logits = rng.normal(size=(rows, k)).astype(np.float32)
        logits[np.arange(rows), labels] += 4.0 * rng.random(rows).astype(np.float32)
        table = pa.table({
            "id": pa.array([f"v{start + j:08d}" for j in range(rows)], pa.string()),
            "label": pa.array(labels, pa.int64()),
            "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.ravel()), k).cast(pa.list_(pa.float32())),
            "error": pa.array([""] * rows, pa.string()),
        })
        names.append(f"part-{i:05d}.parquet")
        pq.write_table(table, folder / names[-1], compression="zstd")
    write_manifest(str(folder), names, rows=n, metadata={"split": "val"})
    return folder


def measure(script: str, path: Path) -> tuple[dict, float, float]:
    """(metrics, peak RSS MiB, wall s) of ``script`` on ``path`` in a fresh interpreter."""
    tic = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["metrics"], result["peak_kib"] / 1024, time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--classes", type=int, default=1000)
    args = parser.parse_args()
    rows, peaks, metrics = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="eval_scale_") as tmp:
        for mult in (1, 4):
            n = args.n * mult
            path = write_predictions(Path(tmp) / f"n{n}", n, args.classes, seed=mult)
            for name, script in PATHS.items():
                m, peak, wall = measure(script, path)
                peaks[(name, mult)] = peak
                metrics[(name, mult)] = m
                rows.append([name, f"{n:,}", f"{peak:.0f}", f"{wall:.1f}", f"{m['acc']:.4f}", f"{m['ece_mass']:.4f}"])
                print(rows[-1], flush=True)
    streaming, in_memory = PATHS
    worst = max(abs(metrics[(streaming, 1)][k] - v) for k, v in metrics[(in_memory, 1)].items())
    ratio = {name: peaks[(name, 4)] / peaks[(name, 1)] for name in PATHS}
    text = (
        f"# Evaluation at scale\n\n{machine_line()}\n\n"
        f"Predictions parts directories of N and 4N rows of {args.classes}-class float32 logits (4,096 rows a part), "
        "each evaluated in a fresh process; peak RSS is the process's ru_maxrss.\n\n"
        + markdown_table(["path", "rows", "peak RSS MiB", "wall s", "acc", "ECE mass"], rows)
        + "\n\nPeak RSS at 4N / N: "
        + ", ".join(f"{name} {r:.3f}" for name, r in ratio.items())
        + " (target for the streaming path <= 1.15).\n\n"
        f"Largest difference between the two paths' metrics at N: {worst:.2e} (target <= 1e-9).\n"
    )
    print(text)
    write_result("eval_scale.md", text)


if __name__ == "__main__":
    main()
