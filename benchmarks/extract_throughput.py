"""Feature-extraction throughput: the Ray scoring pipeline against what a user would write instead.

The baseline is a torch ``DataLoader`` whose worker processes read and decode the JPEGs and apply
the encoder's preprocessing, overlapped with the encoder in the main process (one torch thread),
keeping the features in memory: the standard PyTorch inference pipeline. It runs with 1 and with 2
loader workers and the faster is the baseline. The Ray side is pass 1 of ``rmd-ray score``
(:func:`rmd_ray.distributed.inference.pipeline.embed_source`): plan the shards of the Parquet file, read and
decode in Ray Data tasks, embed in an actor pool, write the features as Parquet parts with their
completion records. Its time includes Ray Data's start-up (not ``ray.init``). Same images, decode,
encoder, resolution and batch size on both sides; runs interleaved, best of ``--repeat`` kept.
Target: Ray >= 0.9x the best DataLoader configuration.

Run: python benchmarks/extract_throughput.py [--images 10000] [--image-size 32] [--repeat 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA_ROOT, machine_line, markdown_table, write_result  # noqa: E402

SHARED = DATA_ROOT / "cifar10" / "train.parquet"


class _JpegDataset:
    """Map-style dataset over the Parquet file's rows: decode + the encoder's preprocessing per item."""

    def __init__(self, path: Path, limit: int, preprocess) -> None:
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=["image"]).slice(0, limit)
        self.images = table.column("image").to_pylist()
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        from rmd_ray.data.decode import decode_image

        return self.preprocess(decode_image({"id": str(index), "label": 0, "image": self.images[index]}))


def _worker_init(_: int) -> None:
    import torch

    torch.set_num_threads(1)


def dataloader(*, workers: int, n: int, encoder_name: str, image_size: int, batch_size: int) -> float:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from rmd_ray.nn.encoders import build_encoder

    torch.set_num_threads(1)
    start = time.perf_counter()
    encoder = build_encoder(encoder_name, image_size=image_size)
    loader = DataLoader(
        _JpegDataset(SHARED, n, encoder.preprocess), batch_size=batch_size, num_workers=workers,
        worker_init_fn=_worker_init, prefetch_factor=4, persistent_workers=False,
    )
    features = []
    with torch.inference_mode():
        for images in loader:
            features.append(encoder.model(images).numpy())
    assert sum(len(f) for f in features) == n and np.isfinite(features[0]).all()
    return time.perf_counter() - start


def ray_pipeline(*, actors: int, n: int, encoder_name: str, image_size: int, batch_size: int) -> float:
    from rmd_ray.distributed.inference.pipeline import EncoderSpec, ExtractConfig, embed_source
    from rmd_ray.distributed.sources.plan import open_source

    out = Path(tempfile.mkdtemp(prefix="rmd_extract_"))
    try:
        start = time.perf_counter()
        source = open_source(f"parquet:{SHARED}", limit=n)
        spec = EncoderSpec(encoder_name, image_size=image_size)
        result = embed_source(
            source, features_dir=str(out / "features.parquet"), encoder=spec,
            extract=ExtractConfig(batch_size=batch_size, num_actors=actors),
            resolution=image_size, feature_dim=1280,
        )
        assert result.rows == n
        return time.perf_counter() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--actors", type=int, default=1, help="encoder actors on the Ray side")
    args = parser.parse_args()
    if not SHARED.is_file():
        sys.exit(f"skipped: {SHARED} not found (the shared CIFAR-10 Parquet)")

    import ray

    from rmd_ray.distributed.runtime.cluster import init_ray

    init_ray(include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    kw = dict(n=args.images, encoder_name=args.encoder, image_size=args.image_size, batch_size=args.batch_size)
    runs: dict[str, list[float]] = {"dl1": [], "dl2": [], "ray": []}
    for _ in range(args.repeat):
        runs["dl1"].append(dataloader(workers=1, **kw))
        runs["dl2"].append(dataloader(workers=2, **kw))
        runs["ray"].append(ray_pipeline(actors=args.actors, **kw))
    ray.shutdown()
    n = args.images
    best = {k: min(v) for k, v in runs.items()}
    baseline = min(best["dl1"], best["dl2"])
    ratio = baseline / best["ray"]
    rows = [
        ["torch DataLoader", "1 loader worker + encoder in main (1 thread)", f"{n / best['dl1']:.0f}",
         ", ".join(f"{t:.1f}" for t in runs["dl1"]), ""],
        ["torch DataLoader", "2 loader workers + encoder in main (1 thread)", f"{n / best['dl2']:.0f}",
         ", ".join(f"{t:.1f}" for t in runs["dl2"]), ""],
        ["rmd-ray pass 1 (Ray Data)", f"{args.actors} encoder actor(s) x 1 thread + read/decode tasks, "
         "features written", f"{n / best['ray']:.0f}", ", ".join(f"{t:.1f}" for t in runs["ray"]),
         f"**{ratio:.2f}x** the best DataLoader (target >= 0.9x)"],
    ]
    table_md = markdown_table(["pipeline", "parallelism", "images/s (best)", "runs (s)", "ratio"], rows)
    text = (f"# extract_throughput\n\n{machine_line()}; {n:,} CIFAR-10 JPEGs, {args.encoder} at "
            f"{args.image_size} px, batch {args.batch_size}; start-up included on both sides\n\n{table_md}\n")
    print(text)
    print("written to", write_result("extract_throughput.md", text))


if __name__ == "__main__":
    main()
