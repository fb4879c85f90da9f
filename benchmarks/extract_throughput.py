"""Feature-extraction throughput: the Ray pipeline against a plain single-process torch loop.

Both sides decode the same JPEGs, preprocess them and run the same encoder at the same resolution with
the same total thread count (plain: one process with T torch threads; Ray: T actors with one thread
each, plus the decode tasks). The Ray time includes Ray Data's fixed start-up (~7 s), not ray.init.
The runs are interleaved and the best of each kept, so a burst of load elsewhere hurts neither side
more than the other. Target: Ray >= 0.85x the plain loop's images/s on >= 10,000 images.

Run: python benchmarks/extract_throughput.py [--images 10000] [--image-size 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, markdown_table, write_result  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10" / "train.parquet"


def plain_loop(table, *, encoder_name: str, image_size: int, batch_size: int, threads: int) -> float:
    import torch

    from rmd_ray.data.decode import decode_batch
    from rmd_ray.nn.encoders import build_encoder

    torch.set_num_threads(threads)
    encoder = build_encoder(encoder_name, image_size=image_size)
    start = time.perf_counter()
    done = 0
    for begin in range(0, table.num_rows, batch_size):
        images, ok_ids, _ = decode_batch(table.slice(begin, batch_size), preprocess=encoder.preprocess)
        with torch.inference_mode():
            encoder.model(images)
        done += len(ok_ids)
    assert done == table.num_rows
    return time.perf_counter() - start


def ray_pipeline(table, *, encoder_name: str, image_size: int, batch_size: int, threads: int) -> float:
    from rmd_ray.distributed.scoring import EncoderSpec, ExtractConfig, extract_features

    start = time.perf_counter()
    features, errors = extract_features(
        table,
        encoder=EncoderSpec(encoder_name, image_size=image_size),
        config=ExtractConfig(batch_size=batch_size, num_actors=threads),
    )
    assert features.num_rows + errors.num_rows == table.num_rows
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if not SHARED.is_file():
        sys.exit(f"skipped: {SHARED} not found (the shared CIFAR-10 Parquet)")

    import ray

    from rmd_ray.data.readers import read_parquet_images

    table = read_parquet_images(SHARED, limit=args.images)
    ray.init(num_cpus=args.threads + 1, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    kw = dict(encoder_name=args.encoder, image_size=args.image_size, batch_size=args.batch_size, threads=args.threads)
    plain, piped = [], []
    for _ in range(args.repeat):
        plain.append(plain_loop(table, **kw))
        piped.append(ray_pipeline(table, **kw))
    ray.shutdown()
    n = table.num_rows
    best_plain, best_ray = min(plain), min(piped)
    ratio = best_plain / best_ray
    rows = [
        ["plain torch loop", f"{args.threads} torch threads, 1 process", f"{n / best_plain:.1f}",
         ", ".join(f"{t:.1f}" for t in plain), ""],
        ["Ray Data pipeline", f"{args.threads} actors x 1 thread + decode tasks", f"{n / best_ray:.1f}",
         ", ".join(f"{t:.1f}" for t in piped), f"{ratio:.2f}x (target >= 0.85x)"],
    ]
    table_md = markdown_table(["pipeline", "parallelism", "images/s (best)", "runs (s)", "ratio"], rows)
    text = (f"# extract_throughput\n\n{machine_line()}; {n:,} CIFAR-10 JPEGs, {args.encoder} at "
            f"{args.image_size} px, batch {args.batch_size}\n\n{table_md}\n")
    print(text)
    print("written to", write_result("extract_throughput.md", text))


if __name__ == "__main__":
    main()
