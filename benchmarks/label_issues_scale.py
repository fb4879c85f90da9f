"""Label issues at scale: ``find-label-issues`` over ImageNet-size inputs keeps the driver's memory flat.

Generates, streaming part by part, N rows of 1,000-class features (d = 1,280, float32: Gaussian class
clusters, 2% of the labels flipped to another class) as the ``features.parquet/`` directory scoring
writes, plus a ``parquet:`` image source of the same ids (tiny unique PNGs, row groups of 1,000 rows).
The sets are nested: every N is a prefix of the largest (hard links, so the disk holds the largest
once). Then, per N, each command in a fresh driver process, as the CLI runs them:

- ``rmd-ray score --source parquet:IMAGES --features-cache FEATURES`` (passes 2-4 on Ray: statistics
  merged by a tree of tasks, scores per part) and ``rmd-ray find-label-issues`` (the ranking streamed
  over the scores parts, the top 64 drawn in a grid): wall time and driver peak RSS, the N_max / N_min
  RSS ratio (target <= 1.15), the image row groups whose image column was read for the grid (only those
  holding a suspect), and the AUROC of the ranking for the flipped labels;
- cleanlab's low-memory label-issue finder (``find_label_issues_batched``, what
  ``CleanLearning(low_memory=True)`` runs; cleanlab 2.9's ``filter.find_label_issues`` has no
  ``low_memory`` argument) given float64 pred_probs of a scikit-learn ``LogisticRegression`` fitted on
  the first rows of the same features, where N x K x 8 bytes fit the budget: its wall time and peak RSS
  (pred_probs included).

Run: nice -n 5 python benchmarks/label_issues_scale.py [--n 62500 125000 250000 500000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, markdown_table, write_result  # noqa: E402

CLASSES, DIM = 1000, 1280
PART_ROWS = 3125  # features rows per part; every N is a multiple of it and of FILE_ROWS
FILE_ROWS = 62_500  # image source rows per file
GROUP_ROWS = 1000  # image source rows per row group
FLIP, SPREAD, TOP = 0.02, 0.15, 64
IMAGE_SIZE = 224
LR_ROWS, LR_ITERATIONS = 12_500, 30


def _png(pixels: np.ndarray) -> bytes:
    """An RGB PNG of ``pixels`` (h, w, 3 uint8), written directly (PIL takes 4x longer per image)."""
    h, w, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[r].tobytes() for r in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b""))


def _part(index: int, means: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Part ``index``: (features float32, given labels, flipped mask), the same whatever N."""
    rng = np.random.default_rng([seed, 0, index])
    true = rng.integers(0, CLASSES, PART_ROWS)
    flipped = rng.random(PART_ROWS) < FLIP
    given = np.where(flipped, (true + rng.integers(1, CLASSES, PART_ROWS)) % CLASSES, true)
    features = rng.standard_normal((PART_ROWS, DIM), dtype=np.float32)
    features += means[true]
    return features, given, flipped


def generate(root: Path, n_max: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Write ``root/features/part-*.parquet`` and ``root/images/train-*.parquet`` for ``n_max`` rows.

    One part in memory at a time. Returns the given labels and the flipped mask of every row.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "features").mkdir(parents=True)
    (root / "images").mkdir()
    means = np.random.default_rng([seed, 1, 0]).normal(0, SPREAD, (CLASSES, DIM)).astype(np.float32)
    given_all, flipped_all, pngs, labels = [], [], [], []
    pixels = np.random.default_rng([seed, 2, 0])
    for index in range(n_max // PART_ROWS):
        features, given, flipped = _part(index, means, seed)
        start = index * PART_ROWS
        ids = pa.array([f"r{start + i:07d}" for i in range(PART_ROWS)], pa.string())
        pq.write_table(pa.table({
            "id": ids, "label": pa.array(given, pa.int64()), "shard": pa.array(np.zeros(PART_ROWS, np.int64)),
            "features": pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), DIM),
            "error": pa.array([""] * PART_ROWS), "stage": pa.array([""] * PART_ROWS),
        }), root / "features" / f"part-{index:05d}.parquet", compression="zstd")
        given_all.append(given)
        flipped_all.append(flipped)
        pngs += [_png(p) for p in pixels.integers(0, 256, (PART_ROWS, 8, 8, 3), dtype=np.uint8)]
        labels.append(given)
        if len(pngs) == FILE_ROWS:
            first = start + PART_ROWS - FILE_ROWS
            table = pa.table({"id": [f"r{first + i:07d}" for i in range(FILE_ROWS)],
                              "label": pa.array(np.concatenate(labels), pa.int16()), "image": pa.array(pngs)})
            table = table.replace_schema_metadata({"classes": json.dumps([f"c{k:03d}" for k in range(CLASSES)])})
            pq.write_table(table, root / "images" / f"train-{first // FILE_ROWS:03d}.parquet",
                           row_group_size=GROUP_ROWS)
            pngs, labels = [], []
    return np.concatenate(given_all), np.concatenate(flipped_all)


def prefix(root: Path, n: int, resolution: int) -> tuple[str, str]:
    """Hard-link the first ``n`` rows into ``root/n<N>/`` (images and features + manifest); (spec, features)."""
    from rmd_ray.distributed.inference.pipeline import EncoderSpec, ExtractConfig
    from rmd_ray.distributed.inference.resume import run_signature
    from rmd_ray.distributed.sources.plan import open_source
    from rmd_ray.io.parts import write_manifest

    folder = root / f"n{n}"
    (folder / "images").mkdir(parents=True)
    (folder / "features.parquet").mkdir()
    for f in range(n // FILE_ROWS):
        os.link(root / "images" / f"train-{f:03d}.parquet", folder / "images" / f"train-{f:03d}.parquet")
    names = [f"part-{i:05d}.parquet" for i in range(n // PART_ROWS)]
    for name in names:
        os.link(root / "features" / name, folder / "features.parquet" / name)
    spec = f"parquet:{folder / 'images'}"
    source = open_source(spec)
    signature = run_signature(source, EncoderSpec("efficientnet_lite0", image_size=IMAGE_SIZE), ExtractConfig(),
                              resolution)
    meta = {**signature, "feature_dim": DIM, "dataset_fingerprint": f"synthetic-{n}", "source": source.description,
            "rows": n}
    write_manifest(str(folder / "features.parquet"), names, rows=n, metadata=meta)
    return spec, str(folder / "features.parquet")


# ------------------------------------------------------------------------------------ child processes
def _child_score(spec: str, features: str, output: str) -> dict:
    """What ``rmd-ray score --features-cache`` runs (its parser and ``score_run``), with the stage timings."""
    from rmd_ray.cli.console import setup_console
    from rmd_ray.cli.main import build_parser
    from rmd_ray.cli.score import score_run

    args = build_parser().parse_args(["score", "--source", spec, "--features-cache", features, "--image-size",
                                      str(IMAGE_SIZE), "--output", output])
    setup_console(args)
    result = score_run(args, args.output)
    return {"code": 0, "stages": result.seconds, "rows_scored": result.rows_scored}


def _child_rank(spec: str, scores: str, output: str) -> dict:
    """``rmd-ray find-label-issues`` with every read of the image source's files recorded."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rmd_ray.cli.main import main
    from rmd_ray.io import storage

    images = spec.partition(":")[2]
    reads, original = [], storage.open_input

    class Recorded(io.FileIO):  # the file pyarrow reads, recording (uri, offset, size) per read
        def read(self, size: int = -1) -> bytes:
            offset, data = self.tell(), super().read(size)
            reads.append((self.name, offset, len(data)))
            return data

        def readinto(self, buffer) -> int:
            offset, n = self.tell(), super().readinto(buffer)
            reads.append((self.name, offset, n))
            return n

    def recording(uri):
        return pa.PythonFile(Recorded(str(uri)), mode="r") if str(uri).startswith(images) else original(uri)

    storage.open_input = recording
    code = main(["find-label-issues", "--scores", scores, "--source", spec, "--top", str(TOP), "--output", output])
    storage.open_input = original
    groups = touched = image_bytes = read_bytes = 0
    for uri in sorted(storage.list_files(images, suffix=".parquet")):
        meta, size = pq.ParquetFile(uri).metadata, os.path.getsize(uri)
        # the open reads the file's last 64 KiB (footer); every other read is a column chunk asked for
        mine = [(o, n) for u, o, n in reads if u == uri and n and not (o + n == size and o >= size - 65536)]
        for g in range(meta.num_row_groups):
            chunk = meta.row_group(g).column(2)
            start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
            stop = start + chunk.total_compressed_size
            hit = sum(max(0, min(stop, o + n) - max(start, o)) for o, n in mine)
            groups, image_bytes = groups + 1, image_bytes + chunk.total_compressed_size
            touched, read_bytes = touched + (hit > 0), read_bytes + hit
    return {"code": code, "image_groups": groups, "image_groups_read": touched, "image_bytes": image_bytes,
            "image_bytes_read": read_bytes}


def _child_cleanlab(features: str, model: str, output: str) -> dict:
    """pred_probs (N, K) float64 from the fitted logistic regression, then cleanlab's batched finder."""
    import pickle

    from cleanlab.experimental.label_issues_batched import find_label_issues_batched

    from rmd_ray.distributed.scoring.in_memory import feature_matrix
    from rmd_ray.io.parts import iter_parts, read_manifest

    with open(model, "rb") as fh:
        lr = pickle.load(fh)
    n = read_manifest(features)["rows"]
    pred_probs, labels, at = np.empty((n, CLASSES), np.float64), np.empty(n, np.int64), 0
    for part in iter_parts(features, columns=["label", "features"]):
        rows = part.num_rows
        block = pred_probs[at:at + rows]
        block[:] = 0.0  # a class absent from the fitted rows has probability 0
        block[:, lr.classes_] = lr.predict_proba(feature_matrix(part).astype(np.float64))
        labels[at:at + rows] = part.column("label").to_numpy()
        at += rows
    before = peak_rss_mib()
    start = time.perf_counter()
    flags = find_label_issues_batched(labels, pred_probs, return_mask=True, verbose=False, n_jobs=1)
    seconds = time.perf_counter() - start
    np.save(Path(output) / "flags.npy", flags)
    np.save(Path(output) / "self_confidence.npy", pred_probs[np.arange(n), labels])
    return {"cleanlab_seconds": seconds, "rss_before_mib": before,
            "lr_accuracy_on_given": float((pred_probs.argmax(axis=1) == labels).mean())}


CHILDREN = {"score": _child_score, "rank": _child_rank, "cleanlab": _child_cleanlab}


def run_child(kind: str, *args: str, tries: int = 3) -> dict:
    """Run ``CHILDREN[kind](*args)`` in a fresh interpreter; its wall seconds and peak RSS (MiB) added.

    A child whose Ray instance did not start (Ray's node start-up can time out on a heavily loaded
    machine) is run again, up to ``tries`` times in all.
    """
    for _ in range(tries):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, "--child", kind, *args], capture_output=True, text=True,
                              check=False)
        if "timed out during startup" not in done.stderr:
            break
    if done.returncode:
        raise RuntimeError(f"{kind} child failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result.get("code", 0):
        raise RuntimeError(f"{kind} child exited {result['code']}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return {**result, "seconds": time.perf_counter() - start}


def peak_rss_mib() -> float:
    """This process's peak resident set (``VmHWM``), MiB.

    Not ``ru_maxrss``: Linux carries that across ``exec`` from the forking process, so a child started by
    a parent that had grown (this one builds an encoder and fits a model) reports the parent's peak.
    """
    with open("/proc/self/status") as fh:
        line = next(x for x in fh if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024  # kB


def _child_main(kind: str, args: list[str]) -> None:
    import warnings

    warnings.simplefilter("ignore")
    result = CHILDREN[kind](*args)
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))


# ------------------------------------------------------------------------------------------ the parent
def fit_logistic(root: Path, model: Path) -> dict:
    """sklearn's LogisticRegression on the first LR_ROWS rows (given labels), pickled for the cleanlab runs."""
    import pickle

    import pyarrow.parquet as pq
    from sklearn.linear_model import LogisticRegression

    from rmd_ray.distributed.scoring.in_memory import feature_matrix

    parts = [pq.read_table(root / "features" / f"part-{i:05d}.parquet", columns=["label", "features"])
             for i in range(LR_ROWS // PART_ROWS)]
    x = np.concatenate([feature_matrix(p) for p in parts])
    y = np.concatenate([p.column("label").to_numpy() for p in parts])
    start = time.perf_counter()
    lr = LogisticRegression(max_iter=LR_ITERATIONS, tol=1e-6).fit(x, y)
    seconds = time.perf_counter() - start
    with open(model, "wb") as fh:
        pickle.dump(lr, fh)
    return {"rows": len(y), "seconds": seconds, "iterations": int(np.max(lr.n_iter_))}


def ranking_quality(out: Path, flipped: np.ndarray) -> dict:
    """AUROC of the combined ranking for the flipped labels (all rows) and the share flipped in the top 64."""
    import pyarrow.parquet as pq
    from sklearn.metrics import roc_auc_score

    from rmd_ray.core.label_ranking import label_issue_scores
    from rmd_ray.io.parts import read_table

    scores = read_table(str(out / "scores.parquet"), columns=["id", "rmd", "margin"])
    rows = np.asarray([int(i[1:]) for i in scores.column("id").to_pylist()])
    combined = label_issue_scores(scores.column("rmd").to_numpy(), scores.column("margin").to_numpy())
    top = [int(i[1:]) for i in pq.read_table(out / "issues" / "label_issues.parquet").column("id").to_pylist()]
    return {"auroc": float(roc_auc_score(flipped[rows], combined)), "top_flipped": float(flipped[top].mean())}


def cleanlab_quality(out: Path, flipped: np.ndarray) -> dict:
    from sklearn.metrics import roc_auc_score

    flags = np.load(out / "flags.npy")
    confidence = np.load(out / "self_confidence.npy")
    n = len(flags)
    return {"auroc": float(roc_auc_score(flipped[:n], -confidence)), "flagged": int(flags.sum()),
            "precision": float(flipped[:n][flags].mean()) if flags.any() else 0.0,
            "recall": float(flags[flipped[:n]].mean())}


def measure(root: Path, n: int, resolution: int, flipped: np.ndarray, model: Path, budget: float) -> dict:
    """Both commands (and cleanlab where its pred_probs fit ``budget`` bytes) at N; outputs deleted after."""
    import shutil

    spec, features = prefix(root, n, resolution)
    out = root / f"out{n}"
    result = {"n": n, "features_gb": n * DIM * 4 / 1e9, "pred_probs_gib": n * CLASSES * 8 / 2**30}
    result["score"] = run_child("score", spec, features, str(out))
    result["rank"] = run_child("rank", spec, str(out / "scores.parquet"), str(out / "issues"))
    result["rank"].update(ranking_quality(out, flipped))
    if n * CLASSES * 8 <= budget:
        result["cleanlab"] = run_child("cleanlab", features, str(model), str(out))
        result["cleanlab"].update(cleanlab_quality(out, flipped))
    print(json.dumps(result), flush=True)
    shutil.rmtree(out)
    shutil.rmtree(root / f"n{n}")
    return result


def _ours_table(results: list[dict]) -> str:
    rows = []
    for r in results:
        score, rank = r["score"], r["rank"]
        rows.append([
            f"{r['n']:,}", f"{r['features_gb']:.2f}",
            f"{score['seconds']:.0f} ({score['stages']['fit']:.0f}, {score['stages']['score']:.0f})",
            f"{score['peak_rss_mib']:.0f}", f"{rank['seconds']:.1f}", f"{rank['peak_rss_mib']:.0f}",
            f"{rank['image_groups_read']} of {rank['image_groups']} "
            f"({rank['image_bytes_read'] / 2**20:.2f} of {rank['image_bytes'] / 2**20:.0f} MiB)",
            f"{rank['auroc']:.4f}", f"{rank['top_flipped']:.2f}",
        ])
    return markdown_table(
        ["N", "features (GB)", "score: wall s (fit, score passes)", "score: driver peak RSS MiB",
         "find-label-issues: wall s", "find-label-issues: peak RSS MiB", "image row groups read for the grid",
         "AUROC (combined)", f"flipped in top {TOP}"], rows)


def _cleanlab_table(results: list[dict]) -> str:
    rows = []
    for r in results:
        c = r.get("cleanlab")
        measured = [f"{c['seconds']:.0f}", f"{c['cleanlab_seconds']:.1f}", f"{c['peak_rss_mib']:.0f}",
                    f"{c['auroc']:.4f}", f"{c['flagged']:,}", f"{c['precision']:.3f}", f"{c['recall']:.3f}",
                    f"{c['lr_accuracy_on_given']:.3f}"] if c else ["not run: over the memory budget"] + [""] * 7
        rows.append([f"{r['n']:,}", f"{r['pred_probs_gib']:.2f}", *measured])
    return markdown_table(
        ["N", "pred_probs N x K x 8 (GiB)", "process wall s", "finder wall s", "peak RSS MiB (pred_probs included)",
         "AUROC (self-confidence)", "flagged", "precision", "recall", "LR accuracy (given labels)"], rows)


def report(results: list[dict], setup: dict) -> str:
    first, last = results[0], results[-1]
    ratio = {k: last[k]["peak_rss_mib"] / first[k]["peak_rss_mib"] for k in ("score", "rank")}
    span = f"N = {last['n']:,} / {first['n']:,}"
    checks = markdown_table(["check", "measured", "target"], [
        [f"`rmd-ray score` driver peak RSS, {span}", f"**{ratio['score']:.3f}**", "<= 1.15"],
        [f"`find-label-issues` driver peak RSS, {span}", f"**{ratio['rank']:.3f}**", "<= 1.15"],
        ["image row groups read for the grid, largest N", f"{last['rank']['image_groups_read']} of "
         f"{last['rank']['image_groups']}", f"only those holding one of the {TOP} suspects"],
    ])
    return (
        f"# label_issues_scale\n\n{machine_line()}; {CLASSES} classes, d = {DIM} float32 features (Gaussian "
        f"classes, means N(0, {SPREAD}^2), unit within-class noise, {FLIP:.0%} of labels flipped to another class), "
        f"{PART_ROWS:,} rows a features part; a `parquet:` image source of the same ids (8 px PNGs, row groups of "
        f"{GROUP_ROWS:,}). Each command in a fresh driver process, start-up included (Ray, and for `score` "
        f"building EfficientNet-Lite0 on the driver). Generating the largest set took {setup['generate_s']:.0f} s. "
        f"Load average (1 min) at the start and end: {setup['load'][0]:.1f}, {setup['load'][1]:.1f} (a shared "
        "machine: wall times are noisy, memory is not).\n\n"
        f"## rmd-ray: `score --features-cache` then `find-label-issues --top {TOP}`\n\n{_ours_table(results)}\n\n"
        f"## cleanlab `find_label_issues_batched` (= `CleanLearning(low_memory=True)`)\n\n"
        f"pred_probs from scikit-learn `LogisticRegression` (lbfgs, {setup['lr']['iterations']} iterations, "
        f"{setup['lr']['seconds']:.0f} s) fitted on the first {setup['lr']['rows']:,} rows, float64; the "
        "process wall time includes computing them (streamed from the features parts), the finder's does not; "
        f"the peak RSS includes holding them.\n\n{_cleanlab_table(results)}\n\n## Checks\n\n{checks}\n"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child_main(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[62_500, 125_000, 250_000, 500_000])
    parser.add_argument("--cleanlab-gib", type=float, default=4.0, help="run cleanlab where pred_probs fit this")
    parser.add_argument("--tmp", default=None, help="folder for the generated data (default: the system's)")
    args = parser.parse_args()
    ns = sorted(args.n)
    if any(n % FILE_ROWS for n in ns):
        parser.error(f"every N must be a multiple of {FILE_ROWS:,}")
    from rmd_ray.distributed.inference.pipeline import EncoderSpec

    resolution = EncoderSpec("efficientnet_lite0", image_size=IMAGE_SIZE).build().image_size
    with tempfile.TemporaryDirectory(prefix="rmd_label_scale_", dir=args.tmp) as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        _, flipped = generate(root, ns[-1])
        setup = {"generate_s": time.perf_counter() - start, "lr": fit_logistic(root, root / "lr.pkl"),
                 "load": [os.getloadavg()[0]]}
        print(json.dumps(setup), flush=True)
        results = [measure(root, n, resolution, flipped, root / "lr.pkl", args.cleanlab_gib * 2**30) for n in ns]
        setup["load"].append(os.getloadavg()[0])
    text = report(results, setup)
    print(text)
    write_result("label_issues_scale.json", json.dumps({"setup": setup, "results": results}, indent=1))
    print("written to", write_result("label_issues_scale.md", text))


if __name__ == "__main__":
    main()
