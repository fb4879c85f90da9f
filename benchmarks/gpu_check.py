"""The one prepared GPU check: run it when a GPU machine is lent; it finishes in under 8 minutes.

Each line measures a ratio against a baseline in the same run:

1. statistics: CuPy ``batch_stats`` equals NumPy's to 1e-10 relative on 100,000 x d float32
   features, d = 768 and 1,280, K = 1,000 classes (counts, means, pooled scatter), and so does an
   encoder actor's ``part_stats`` on a CUDA tensor handed to CuPy by DLPack;
2. statistics rate: CuPy statistics rows/s as a fraction of CuPy's own float64 X^T X rate on the
   same chunks (the floor of any exact scatter);
2b. label ranking: CuPy ``rank_label_issues`` (float32 factor refined in float64, docs/design.md 1.14)
   equals NumPy's to 1e-9 relative on 100,000 x 1,280 features, K = 10, and its time against the float64
   statistics path (``DifficultyScorer.fit`` + ``label_scores``) on the same GPU;
3. encoder: EfficientNet-Lite0 images/s through rmd-ray's pass 1 with a GPU actor (Ray Data decode
   tasks on the CPUs) against a plain torch loop on the same GPU fed by a DataLoader with as many
   decode workers as CPUs (target >= 0.9x);
4. training step through the training's own loop with bf16 autocast (ResNet-18, batch 256, 32 px):
   proposed loss against CE (target <= 1.03x);
5. training epoch: a Ray Train run with 1 GPU worker streaming an ImageNet-layout folder (decode in Ray
   tasks) against a plain torch loop on the same GPU fed by a DataLoader with as many decode workers
   as CPUs, second epoch of each (target <= 1.10x; ``benchmarks/training_scale.py``'s two runs);
6. with two GPUs: a 2-worker DDP epoch against 1 worker (NCCL), the speed-up.

``--dry-run`` runs every part at toy sizes on the CPU (parts that need CuPy or CUDA say so and are
skipped): how this script is tested on machines without a GPU.

Run: python benchmarks/gpu_check.py [--dry-run]   (writes benchmarks/results/gpu_check.md)
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, markdown_table, write_result  # noqa: E402


def _sync() -> None:
    try:
        import cupy

        cupy.cuda.Device().synchronize()
    except Exception:  # noqa: BLE001 - no CuPy/GPU: nothing to wait for
        pass


def check_statistics(n: int, d: int, k: int, chunk: int) -> list[list[str]]:
    from rmd_ray.core.array_api import cupy_available
    from rmd_ray.core.stats import batch_stats, merge_all

    if not cupy_available():
        return [["CuPy statistics", "skipped: CuPy or a GPU is missing (pip install -e '.[gpu]')", "", ""]]
    import cupy

    rng = np.random.default_rng(0)
    labels = rng.integers(0, k, n)
    feats = (rng.normal(size=(k, d))[labels] + rng.normal(size=(n, d)) + 5.0).astype(np.float32)
    chunks = [(feats[i : i + chunk], labels[i : i + chunk]) for i in range(0, n, chunk)]
    cpu = merge_all(batch_stats(f, y, n_classes=k) for f, y in chunks)
    gpu_chunks = [(cupy.asarray(f), cupy.asarray(y)) for f, y in chunks]
    gpu = merge_all(batch_stats(f, y, n_classes=k) for f, y in gpu_chunks).to_numpy()  # warm-up + result
    rel = max(
        float(np.max(np.abs(gpu.means - cpu.means)) / np.max(np.abs(cpu.means))),
        float(np.max(np.abs(gpu.scatter - cpu.scatter)) / np.max(np.abs(cpu.scatter))),
    )
    _sync()
    start = time.perf_counter()
    merge_all(batch_stats(f, y, n_classes=k) for f, y in gpu_chunks).to_numpy()
    _sync()
    stats_rate = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for f, _ in gpu_chunks:
        x = f.astype(cupy.float64)
        x.T @ x
    _sync()
    gemm_rate = n / (time.perf_counter() - start)
    actor_rel = _actor_statistics_rel(chunks[0][0], chunks[0][1], k)
    return [
        ["CuPy vs NumPy statistics", f"{n:,} x {d}, K = {k}", f"max rel. diff {rel:.1e}",
         "<= 1e-10: " + ("met" if rel <= 1e-10 else "NOT met")],
        ["encoder-actor statistics (torch CUDA tensor -> CuPy by DLPack)", f"{len(chunks[0][1]):,} x {d}, K = {k}",
         f"max rel. diff {actor_rel:.1e} vs NumPy", "<= 1e-10: " + ("met" if actor_rel <= 1e-10 else "NOT met")],
        ["CuPy statistics rate", f"{stats_rate / 1e6:.2f} M rows/s vs float64 X^T X {gemm_rate / 1e6:.2f} M rows/s",
         f"{100 * stats_rate / gemm_rate:.0f}% of the GEMM rate", ">= 70%"],
    ]


def _actor_statistics_rel(feats: np.ndarray, labels: np.ndarray, k: int) -> float:
    """What an encoder actor does with its outputs (``part_stats``) on a CUDA tensor, against NumPy."""
    import torch

    from rmd_ray.core.stats import batch_stats
    from rmd_ray.distributed.inference.stages import part_stats

    got = part_stats(torch.from_numpy(feats).cuda(), labels, n_classes=k, dim=feats.shape[1])
    ref = batch_stats(feats, labels, n_classes=k)
    return max(float(np.max(np.abs(got.means - ref.means)) / np.max(np.abs(ref.means))),
               float(np.max(np.abs(got.scatter - ref.scatter)) / np.max(np.abs(ref.scatter))))


def check_label_ranking(n: int, d: int, k: int) -> list[list[str]]:
    from rmd_ray.core import CovarianceConfig, DifficultyScorer, rank_label_issues
    from rmd_ray.core.array_api import cupy_available

    if not cupy_available():
        return [["CuPy label ranking", "skipped: CuPy or a GPU is missing (pip install -e '.[gpu]')", "", ""]]
    import cupy

    rng = np.random.default_rng(1)
    labels = rng.integers(0, k, n)
    mixing = np.eye(d) + 0.05 * rng.normal(size=(d, d))
    feats = (rng.normal(size=(k, d))[labels] + rng.normal(size=(n, d)) @ mixing).astype(np.float32)
    cpu = rank_label_issues(feats, labels, n_classes=k)
    gpu_feats, gpu_labels = cupy.asarray(feats), cupy.asarray(labels)

    def refined():
        return rank_label_issues(gpu_feats, gpu_labels, n_classes=k, device="cuda")

    def float64_statistics():
        scorer = DifficultyScorer(n_classes=k, covariance=CovarianceConfig(shrinkage="ridge"), device="cuda")
        return scorer.fit(gpu_feats, gpu_labels).label_scores(gpu_feats, gpu_labels)

    gpu = refined()  # warm-up + result
    float64_statistics()
    rel = max(float(np.abs(gpu.rmd - cpu.rmd).max() / np.abs(cpu.rmd).max()),
              float(np.abs(gpu.margin - cpu.margin).max() / np.abs(cpu.margin).max()))
    times = []
    for fn in (refined, float64_statistics):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return [
        ["CuPy vs NumPy label ranking", f"{n:,} x {d}, K = {k}, solver {gpu.solver}", f"max rel. diff {rel:.1e}",
         "<= 1e-9: " + ("met" if rel <= 1e-9 else "NOT met")],
        ["CuPy label ranking time", f"refined {times[0]:.3f} s vs float64 statistics {times[1]:.3f} s",
         f"{times[0] / times[1]:.2f}x", "< 1x"],
    ]


def _jpeg_parquet(path: Path, n: int, size: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(1)
    images = []
    for i in range(n):
        buffer = io.BytesIO()
        pixels = (rng.normal(128, 40, (size, size, 3)) + 40 * (i % 10)).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
        images.append(buffer.getvalue())
    table = pa.table({"id": [f"{i:06d}" for i in range(n)], "label": pa.array(np.arange(n) % 10, pa.int64()),
                      "image": images})
    pq.write_table(table, path, row_group_size=512)
    return path


def check_encoder(n: int, image_size: int, batch_size: int, workdir: Path) -> list[list[str]]:
    import os

    import ray
    import torch
    from torch.utils.data import DataLoader

    from rmd_ray.data.decode import decode_image
    from rmd_ray.distributed.inference.pipeline import EncoderSpec, ExtractConfig, embed_source
    from rmd_ray.distributed.runtime.cluster import init_ray
    from rmd_ray.distributed.sources.plan import open_source
    from rmd_ray.nn.encoders import build_encoder

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    path = _jpeg_parquet(workdir / "images.parquet", n, 256)
    cpus = os.cpu_count() or 2

    class Images:
        def __init__(self, preprocess) -> None:
            import pyarrow.parquet as pq

            self.images = pq.read_table(path, columns=["image"]).column("image").to_pylist()
            self.preprocess = preprocess

        def __len__(self) -> int:
            return len(self.images)

        def __getitem__(self, i: int):
            return self.preprocess(decode_image({"id": str(i), "label": 0, "image": self.images[i]}))

    start = time.perf_counter()
    encoder = build_encoder("efficientnet_lite0", image_size=image_size)
    model = encoder.model.to(device)
    loader = DataLoader(Images(encoder.preprocess), batch_size=batch_size, num_workers=max(1, cpus - 1),
                        pin_memory=cuda, prefetch_factor=4)
    done = 0
    with torch.inference_mode(), torch.autocast(device.type, enabled=cuda):
        for images in loader:
            done += len(model(images.to(device, non_blocking=True)))
    plain = time.perf_counter() - start
    assert done == n

    init_ray(include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    start = time.perf_counter()
    result = embed_source(
        open_source(f"parquet:{path}"), features_dir=str(workdir / "features.parquet"),
        encoder=EncoderSpec("efficientnet_lite0", image_size=image_size),
        extract=ExtractConfig(batch_size=batch_size, num_actors=1, gpus_per_actor=1.0 if cuda else 0.0),
        resolution=image_size, feature_dim=1280,
    )
    piped = time.perf_counter() - start
    assert result.rows == n
    where = "GPU" if cuda else "CPU (no CUDA: dry run)"
    return [
        ["plain torch loop + DataLoader", f"{max(1, cpus - 1)} decode workers, model on {where}",
         f"{n / plain:.0f} images/s", ""],
        ["rmd-ray pass 1", f"1 encoder actor on {where}, decode tasks on {cpus} CPUs",
         f"{n / piped:.0f} images/s", f"{plain / piped:.2f}x the plain loop (target >= 0.9x)"],
    ]


def check_amp_step(batch: int, steps: int) -> list[list[str]]:
    """Proposed loss vs CE through the training's own loop (``train_one_epoch``, bf16 autocast, no scaler)."""
    import torch

    from rmd_ray.nn.engine.loops import train_one_epoch
    from rmd_ray.nn.losses import build_loss
    from rmd_ray.nn.models import build_model

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    model = build_model("resnet18", num_classes=10, width=1.0, cifar_stem=True).to(device)
    optim = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = [{"image": torch.randn(batch, 3, 32, 32, device=device), "label": torch.randint(0, 10, (batch,),
                device=device), "weight": torch.rand(batch, device=device), "id": torch.arange(batch, device=device)}
               for _ in range(steps)]
    losses = {"ce": build_loss("ce"), "proposed": build_loss("proposed", alpha=0.3)}

    def epoch(name: str) -> float:
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        train_one_epoch(model, batches, losses[name], optim, device=device, amp=True)
        if cuda:
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps

    for name in losses:  # warm-up: cuDNN autotuning, allocator
        epoch(name)
    times = {"ce": [], "proposed": []}
    for _ in range(5):  # interleaved: drift affects both
        for name in losses:
            times[name].append(epoch(name))
    ratio = float(np.median(np.asarray(times["proposed"]) / np.asarray(times["ce"])))
    where = "GPU, bf16 autocast (the training's path)" if cuda else "CPU (dry run, no AMP)"
    return [["training step, proposed vs CE", f"ResNet-18, batch {batch}, 32 px, {where}",
             f"{1e3 * np.median(times['ce']):.1f} ms vs {1e3 * np.median(times['proposed']):.1f} ms",
             f"{ratio:.3f}x (target <= 1.03x)"]]


def check_train_epoch(n: int, workdir: Path, *, dry: bool) -> list[list[str]]:
    import json
    import os

    from scoring_scale import make_imagenet_layout
    from training_scale import _run

    root = make_imagenet_layout(workdir / "train", n, size=48)
    val = make_imagenet_layout(workdir / "val", min(n, 1000), size=48, seed=1)  # the same class folders
    options = {"epochs": 2, "use_gpu": not dry, "width": 0.25 if dry else 1.0, "batch": 64 if dry else 256}
    ray_run = _run("ray", str(root), str(val), str(workdir / "ray_out"), json.dumps(options))
    workers = max(1, (os.cpu_count() or 2) - 1)
    plain = _run("dataloader", str(root), str(workers), json.dumps(options))
    ratio = ray_run["train_s"] / plain["train_s"]
    where = "CPU (dry run)" if dry else "1 GPU, AMP"
    return [["training epoch, Ray Train vs DataLoader loop",
             f"ResNet-18 w{options['width']}, {n:,} JPEGs at 32 px, batch {options['batch']}, {where}",
             f"{ray_run['train_s']:.1f} s vs {plain['train_s']:.1f} s ({workers} decode workers); "
             f"data wait {100 * ray_run['data_wait_frac']:.0f}%", f"{ratio:.2f}x (target <= 1.10x)"]]


def check_ddp(n: int, workdir: Path, *, dry: bool) -> list[list[str]]:
    """Two Ray Train workers (DDP, one GPU each) against one, same data: when the machine has 2 GPUs."""
    import json

    import torch
    from scoring_scale import make_imagenet_layout
    from training_scale import _run

    if not dry and torch.cuda.device_count() < 2:
        return [["2-worker DDP", f"skipped: {torch.cuda.device_count()} GPU(s) visible", "", ""]]
    root = make_imagenet_layout(workdir / "train", n, size=48)
    val = make_imagenet_layout(workdir / "val", min(n, 1000), size=48, seed=1)
    runs = {}
    for workers in (1, 2):
        options = {"epochs": 2, "use_gpu": not dry, "width": 0.25 if dry else 1.0, "batch": 64 if dry else 256,
                   "workers": workers}
        runs[workers] = _run("ray", str(root), str(val), str(workdir / f"ray_{workers}"), json.dumps(options))
    speedup = runs[1]["train_s"] / runs[2]["train_s"]
    where = "CPU, gloo (dry run)" if dry else "2 GPUs, NCCL"
    return [["2-worker DDP epoch vs 1 worker", f"ResNet-18, {n:,} JPEGs at 32 px, {where}",
             f"{runs[1]['train_s']:.1f} s vs {runs[2]['train_s']:.1f} s", f"{speedup:.2f}x speed-up (ideal 2x)"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU: checks the script runs")
    args = parser.parse_args()
    dry = args.dry_run
    rows: list[list[str]] = []
    start = time.perf_counter()
    for d in (64,) if dry else (768, 1_280):
        rows += check_statistics(4_000 if dry else 100_000, d, 50 if dry else 1000, 1_000 if dry else 32_768)
    rows += check_label_ranking(2_000 if dry else 100_000, 64 if dry else 1_280, 10)
    workdir = Path(tempfile.mkdtemp(prefix="rmd_gpu_check_"))
    try:
        rows += check_encoder(256 if dry else 20_000, 32 if dry else 224, 32 if dry else 256, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows += check_amp_step(16 if dry else 256, 3 if dry else 50)
    workdir = Path(tempfile.mkdtemp(prefix="rmd_gpu_check_train_"))
    try:
        rows += check_train_epoch(512 if dry else 20_000, workdir, dry=dry)
        rows += check_ddp(256 if dry else 20_000, workdir / "ddp", dry=dry)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    table = markdown_table(["check", "setting", "measured", "target"], rows)
    text = (f"# gpu_check{' (dry run on CPU: sizes are toys, not results)' if dry else ''}\n\n"
            f"{machine_line()}; {time.perf_counter() - start:.0f} s in all\n\n{table}\n")
    print(text)
    print("written to", write_result("gpu_check_dry_run.md" if dry else "gpu_check.md", text))


if __name__ == "__main__":
    main()
