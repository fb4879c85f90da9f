"""Training step time: the proposed loss against cross-entropy, and Ray Train against a plain torch loop.

(a) One training step (``engine.train_one_epoch`` over one batch: forward, loss, NaN check, backward,
    SGD step) with the proposed loss vs cross-entropy, same model and batch: ResNet-18 width 0.5,
    CIFAR stem, batch 128, 32 px, CPU, 1 torch thread. Steps alternate CE / proposed so that load
    from other processes hits both alike; the median of the per-pair ratios is reported.
    Target: <= 1.03x.
(b) One epoch on a 1-worker Ray Train run (``run_training`` on in-memory arrays: shards decoded in Ray
    tasks, local shuffle, on-worker
    normalisation, augmentation, validation on rank 0, checkpoint + report) vs the same work in a
    plain loop in this process (numpy permutation, same normalisation and augmentation,
    ``train_one_epoch``, ``predict`` on the validation set, ``save_checkpoint``). 4096 CIFAR-like
    images (32 px), ResNet-18 width 0.25, batch 128, 1 torch thread on both sides; first epochs are
    warm-up and not counted. Ray starts workers with niceness 15, so the like-for-like plain loop
    runs in a Ray task (same niceness); the loop in the driver process (niceness 0) is shown too.
    Target: steady-state epoch <= 1.10x. The fixed cost of starting the run (controller, worker
    group, datasets) and of finishing it is reported separately.

Run: python benchmarks/step_time.py [--quick]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")  # before Ray starts: workers inherit it
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_time, machine_line, markdown_table, write_result  # noqa: E402

from rmd_ray.data.readers import from_arrays  # noqa: E402
from rmd_ray.distributed.runtime.cluster import init_ray, worker_setup  # noqa: E402
from rmd_ray.distributed.training import TrainConfig, run_training  # noqa: E402
from rmd_ray.nn import engine  # noqa: E402
from rmd_ray.nn.losses import build_loss  # noqa: E402
from rmd_ray.nn.models import build_model  # noqa: E402
from rmd_ray.nn.transforms import channel_moments, moments_to_mean_std, normalize_uint8  # noqa: E402

K = 10


def step_ratio(*, pairs: int, width: float, batch: int, size: int) -> dict[str, float]:
    """Median per-pair ratio of proposed / CE training-step time (alternating, after warm-up)."""
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=K, cifar_stem=True, width=width)
    optimizer = engine.build_optimizer(model, engine.OptimConfig(lr=1e-3, epochs=1))
    gen = torch.Generator().manual_seed(0)
    data = {
        "image": torch.randn(batch, 3, size, size, generator=gen),
        "label": torch.randint(0, K, (batch,), generator=gen),
        "id": torch.arange(batch),
        "weight": torch.rand(batch, generator=gen),
    }
    losses = {"ce": build_loss("ce"), "proposed": build_loss("proposed", alpha=0.3)}

    def step(name: str) -> float:
        start = time.perf_counter()
        engine.train_one_epoch(model, [data], losses[name], optimizer, device="cpu")
        return time.perf_counter() - start

    for name in ("ce", "proposed"):  # warm-up (allocator, first-call dispatch)
        step(name)
    ce, prop, ratios = [], [], []
    for i in range(pairs):
        order = ("ce", "proposed") if i % 2 == 0 else ("proposed", "ce")
        t = {name: step(name) for name in order}
        ce.append(t["ce"])
        prop.append(t["proposed"])
        ratios.append(t["proposed"] / t["ce"])
    return {
        "ce": statistics.median(ce),
        "proposed": statistics.median(prop),
        "ratio": statistics.median(ratios),
        "q1": float(np.quantile(ratios, 0.25)),
        "q3": float(np.quantile(ratios, 0.75)),
    }


def loss_only(*, batch: int, repeat: int) -> dict[str, float]:
    """Seconds per forward + backward of each loss alone on (batch, K) logits (best of 5 rounds)."""
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(batch, K, generator=gen, requires_grad=True)
    labels = torch.randint(0, K, (batch,), generator=gen)
    weights = torch.rand(batch, generator=gen)
    out = {}
    for name, loss in (("ce", build_loss("ce")), ("proposed", build_loss("proposed", alpha=0.3))):

        def run(loss=loss):
            for _ in range(repeat):
                loss(logits, labels, weights=weights).backward()

        out[name] = best_time(run, repeat=5) / repeat
    return out


def cifar_like(n: int, seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, n)
    colours = rng.integers(0, 256, (K, 3))
    images = rng.integers(0, 120, (n, size, size, 3)) + 0.5 * colours[labels][:, None, None, :]
    return np.clip(images, 0, 255).astype(np.uint8), labels


def plain_epochs(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    epochs: int,
    width: float,
    batch: int,
    seed: int = 0,
) -> list[float]:
    """Wall time of each epoch of the same work as a Ray worker, in this process."""
    images = np.ascontiguousarray(train[0])  # (N, H, W, 3) uint8, normalised per batch as the workers do
    labels = train[1].astype(np.int64)
    val_images = np.ascontiguousarray(val[0])
    val_labels = val[1].astype(np.int64)
    mean_l, std_l = moments_to_mean_std(channel_moments(images))
    mean, std = torch.tensor(mean_l), torch.tensor(std_l)
    torch.manual_seed(seed)
    model = build_model("resnet18", num_classes=K, cifar_stem=True, width=width)
    optim = engine.OptimConfig(lr=0.05, epochs=epochs)
    optimizer = engine.build_optimizer(model, optim)
    scheduler = engine.build_scheduler(optimizer, optim, steps_per_epoch=-(-len(labels) // batch))
    loss_fn = build_loss("ce")

    def batches(x, y, order):
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            yield {
                "image": normalize_uint8(torch.from_numpy(x[idx]), mean, std),
                "label": torch.from_numpy(y[idx]),
                "id": torch.from_numpy(idx.astype(np.int64)),
            }

    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for epoch in range(epochs):
            start = time.perf_counter()
            order = np.random.default_rng([seed, epoch]).permutation(len(labels))
            gen = torch.Generator().manual_seed(epoch)
            engine.train_one_epoch(
                model,
                batches(images, labels, order),
                loss_fn,
                optimizer,
                scheduler=scheduler,
                device="cpu",
                augment=functools.partial(engine.random_crop_flip, generator=gen),
            )
            engine.predict(model, batches(val_images, val_labels, np.arange(len(val_labels))), device="cpu")
            engine.save_checkpoint(
                Path(tmp) / "model.pt", model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch + 1
            )
            times.append(time.perf_counter() - start)
    return times


def _plain_in_task(train, val, **kw) -> list[float]:
    worker_setup(threads=1)
    return plain_epochs(train, val, **kw)


class EpochClock:
    """Epoch hook: append (epoch, wall clock) to a file; pickled by value (defined in __main__)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, epoch: int) -> None:
        with open(self.path, "a") as fh:
            fh.write(f"{epoch} {time.time()}\n")


def ray_epochs(train, val, *, epochs: int, width: float, batch: int) -> tuple[list[float], float, float]:
    """(steady epoch times from the hook clock, fit wall time, sum of all epoch times)."""
    with tempfile.TemporaryDirectory() as tmp:
        clock = EpochClock(str(Path(tmp) / "clock.txt"))
        config = TrainConfig(
            model="resnet18",
            width=width,
            cifar_stem=True,
            loss="ce",
            optim=engine.OptimConfig(lr=0.05, epochs=epochs),
            batch_size=batch,
            cpus_per_worker=1.0,
            max_failures=0,
            shuffle="seeded",
        )
        start = time.time()
        run_training(
            from_arrays(*train, ids=[f"t{i}" for i in range(len(train[1]))]),
            val=from_arrays(*val, ids=[f"v{i}" for i in range(len(val[1]))]),
            config=config,
            output_dir=Path(tmp) / "out",
            run_name="bench",
            epoch_hook=clock,
        )
        wall = time.time() - start
        stamps = [float(line.split()[1]) for line in Path(clock.path).read_text().splitlines()]
    durations = list(np.diff(stamps))  # epoch e = start(e + 1) - start(e): train, val, checkpoint, report
    return durations, wall, stamps[-1] - stamps[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes (a smoke run, not for the README)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    pairs = 40 if not args.quick else 4
    n_train = 4096 if not args.quick else 512
    n_val = 512 if not args.quick else 128

    a = step_ratio(pairs=pairs, width=0.5, batch=128, size=32)
    alone = loss_only(batch=128, repeat=2000 if not args.quick else 200)
    # the loss is the only difference between the two steps: its extra time bounds the step ratio
    ratio_bound = 1 + (alone["proposed"] - alone["ce"]) / a["ce"]
    print(f"(a) CE {a['ce']:.3f} s, proposed {a['proposed']:.3f} s, ratio {a['ratio']:.3f}", flush=True)

    train, val = cifar_like(n_train, 0, 32), cifar_like(n_val, 1, 32)
    width_b, kw = 0.25, {"epochs": 3, "width": 0.25, "batch": 128}
    init_ray(log_to_driver=False)
    # Ray starts its workers with niceness 15 (RAY_worker_niceness); on a shared machine a niced
    # process gets less CPU than this driver, so the like-for-like baseline is the plain loop in a
    # Ray task (same niceness, 1 CPU, 1 thread). The loop in this process is shown as well.
    in_task = ray.remote(num_cpus=1)(_plain_in_task)
    # plain / Ray / plain, so that drifting load from other processes hits both sides
    task_before = ray.get(in_task.remote(train, val, **kw))[1:]  # epoch 0 is warm-up
    ray_times, ray_wall, ray_epoch_sum = ray_epochs(train, val, epochs=6, width=width_b, batch=128)
    task_after = ray.get(in_task.remote(train, val, **kw))[1:]
    driver = plain_epochs(train, val, **kw)[1:]
    steady_ray = ray_times[1:]  # epoch 0 is warm-up (the shard's first iteration starts Ray Data)
    plain = task_before + task_after
    ratio_b = statistics.median(steady_ray) / statistics.median(plain)
    ratio_driver = statistics.median(steady_ray) / statistics.median(driver)
    print(f"(b) plain in task {plain}, in driver {driver}, ray {ray_times}, wall {ray_wall:.1f}", flush=True)

    rows = [
        [
            "(a) training step, proposed vs CE (ResNet-18 w0.5, B=128, 32 px, 1 thread)",
            f"{a['proposed'] * 1e3:.0f} ms vs {a['ce'] * 1e3:.0f} ms",
            f"{a['ratio']:.3f}x (IQR {a['q1']:.3f}-{a['q3']:.3f}, {pairs} pairs)",
            "<= 1.03x",
        ],
        [
            "(a') the loss alone, forward + backward on (128, 10) logits",
            f"{alone['proposed'] * 1e6:.0f} us vs {alone['ce'] * 1e6:.0f} us",
            f"step ratio bound {ratio_bound:.4f}x",
            "",
        ],
        [
            f"(b) epoch, Ray Train 1 worker vs plain loop in a Ray task ({n_train} imgs, w{width_b}, B=128)",
            f"{statistics.median(steady_ray):.2f} s ({min(steady_ray):.1f}-{max(steady_ray):.1f}) vs "
            f"{statistics.median(plain):.2f} s ({min(plain):.1f}-{max(plain):.1f})",
            f"{ratio_b:.3f}x (median of {len(steady_ray)} vs {len(plain)} epochs)",
            "<= 1.10x",
        ],
        [
            "(b') same, plain loop in the driver process (niceness 0, not like for like)",
            f"{statistics.median(steady_ray):.2f} s vs {statistics.median(driver):.2f} s",
            f"{ratio_driver:.3f}x (median of {len(steady_ray)} vs {len(driver)} epochs)",
            "",
        ],
        ["(b) Ray first epoch (starts the shard's Ray Data execution)", f"{ray_times[0]:.2f} s", "", ""],
        [
            "(b) Ray fixed cost per run: fit wall minus epochs (start-up, shutdown, driver predictions)",
            f"{ray_wall - ray_epoch_sum - statistics.median(steady_ray):.1f} s",
            f"fit wall {ray_wall:.1f} s",
            "",
        ],
    ]
    table = markdown_table(["measure", "time", "ratio", "target"], rows)
    text = (
        f"# step_time ({'quick' if args.quick else 'full'})\n\n{machine_line()}; torch "
        f"{torch.__version__}, {torch.get_num_threads()} thread(s) in this process and in the Ray worker\n\n"
        f"{table}\n"
    )
    print(text)
    if not args.quick:
        print("written to", write_result("step_time.md", text))


if __name__ == "__main__":
    main()
