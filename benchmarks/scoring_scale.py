"""Scoring at scale on one machine: driver memory must not grow with the dataset.

Generates an ImageNet-train layout (1,000 class folders of 256 px JPEGs made of noise over smooth
gradients, so they do not compress to nothing: ~40 KB each) at N and 4N images, then scores it with
``rmd-ray score --source folder:ROOT`` (EfficientNet-Lite0), each run in a fresh driver process:

- driver peak RSS at 4N over N (target <= 1.15: the driver holds the shard plan and statistics only);
- on the smaller N, the lazy folder source against the in-memory path (the whole reader table on the
  driver, put into the object store: how scoring worked before sources were lazy): scores equal,
  images/s of the lazy path >= 0.9x.

Run: python benchmarks/scoring_scale.py [--n 4000] [--image-size 64]
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

CLASSES = 1000


def make_imagenet_layout(root: Path, n: int, *, size: int = 256, seed: int = 0) -> Path:
    """``root/<wnid>/<wnid>_<i>.JPEG``: ``n`` images spread evenly over 1,000 class folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(n):
        k = i % CLASSES
        wnid = f"n{10_000_000 + k:08d}"
        folder = root / wnid
        folder.mkdir(parents=True, exist_ok=True)
        angle = 2 * np.pi * k / CLASSES
        base = 128 + 90 * np.sin(6 * (np.cos(angle) * xx + np.sin(angle) * yy) + k)
        pixels = base[..., None] + rng.normal(0, 25, (size, size, 3))
        pixels[..., k % 3] += 30
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{wnid}_{i}.JPEG", quality=85)
    return root


def _child(mode: str, root: str, output: str, image_size: int) -> None:
    """One scoring run in this (fresh) process; prints seconds and peak RSS as JSON."""
    import resource
    import warnings

    import ray

    from rmd_ray.core import CovarianceConfig
    from rmd_ray.data.readers import read_image_folder
    from rmd_ray.distributed.runtime.cluster import init_ray
    from rmd_ray.distributed.scoring.run import EncoderSpec, ExtractConfig, run_scoring

    warnings.simplefilter("ignore")
    init_ray(include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    start = time.perf_counter()
    source = read_image_folder(root) if mode == "memory" else f"folder:{root}"
    result = run_scoring(
        source, output_dir=output, encoder=EncoderSpec("efficientnet_lite0", image_size=image_size),
        extract=ExtractConfig(batch_size=64), covariance=CovarianceConfig(shrinkage="ridge"),
    )
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak, "rows": result.rows_scored,
                      "scores": result.scores_path}))


def _run(mode: str, root: Path, output: Path, image_size: int) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(root), str(output), str(image_size)],
        capture_output=True, text=True, check=False,
    )
    if done.returncode:
        raise RuntimeError(done.stdout[-2000:] + done.stderr[-4000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4000, help="N images (4 per class at the default)")
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()

    import numpy as np

    from rmd_ray.io.parts import read_table

    with tempfile.TemporaryDirectory(prefix="rmd_scale_") as tmp:
        tmp = Path(tmp)
        small = make_imagenet_layout(tmp / "n", args.n)
        large = make_imagenet_layout(tmp / "4n", 4 * args.n, seed=1)
        mean_kb = np.mean([p.stat().st_size for p in list(small.rglob("*.JPEG"))[:200]]) / 1024
        lazy_n = _run("lazy", small, tmp / "out_lazy_n", args.image_size)
        memory_n = _run("memory", small, tmp / "out_memory_n", args.image_size)
        lazy_4n = _run("lazy", large, tmp / "out_lazy_4n", args.image_size)
        a = read_table(lazy_n["scores"]).sort_by("id")
        b = read_table(memory_n["scores"]).sort_by("id")
        same_ids = a.column("id").to_pylist() == b.column("id").to_pylist()
        diff = float(np.max(np.abs(a.column("rmd").to_numpy() - b.column("rmd").to_numpy())))
        scale = float(np.max(np.abs(b.column("md").to_numpy())))

    rss_ratio = lazy_4n["peak_rss_mib"] / lazy_n["peak_rss_mib"]
    speed_ratio = memory_n["seconds"] / lazy_n["seconds"]
    rows = [
        [f"lazy folder source, N = {args.n:,}", f"{lazy_n['seconds']:.1f}", f"{args.n / lazy_n['seconds']:.0f}",
         f"{lazy_n['peak_rss_mib']:.0f}", ""],
        [f"in-memory table (before), N = {args.n:,}", f"{memory_n['seconds']:.1f}",
         f"{args.n / memory_n['seconds']:.0f}", f"{memory_n['peak_rss_mib']:.0f}", ""],
        [f"lazy folder source, 4N = {4 * args.n:,}", f"{lazy_4n['seconds']:.1f}",
         f"{4 * args.n / lazy_4n['seconds']:.0f}", f"{lazy_4n['peak_rss_mib']:.0f}", ""],
    ]
    table = markdown_table(["run", "seconds", "images/s", "driver peak RSS (MiB)", ""], rows)
    checks = markdown_table(["check", "measured", "target"], [
        ["driver peak RSS, 4N / N (lazy)", f"**{rss_ratio:.3f}**", "<= 1.15"],
        ["images/s, lazy / in-memory at N", f"**{speed_ratio:.2f}x**", ">= 0.9x"],
        ["scores lazy vs in-memory at N", f"same ids: {same_ids}; max |RMD diff| {diff:.2e} "
         f"(max MD {scale:.0f})", "equal"],
    ])
    text = (f"# scoring_scale\n\n{machine_line()}; ImageNet-train layout, {CLASSES} classes, 256 px JPEGs "
            f"(~{mean_kb:.0f} KB each), EfficientNet-Lite0 at {args.image_size} px, each run in a fresh "
            f"driver process, start-up included\n\n{table}\n\n{checks}\n")
    print(text)
    print("written to", write_result("scoring_scale.md", text))


if __name__ == "__main__":
    main()
