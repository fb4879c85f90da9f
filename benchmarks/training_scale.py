"""Training at scale on one machine: streaming ingest vs what a user would write instead.

Generates an ImageNet-train layout (class folders of JPEGs; ``scoring_scale.make_imagenet_layout``)
at N and 4N images and trains a small ResNet-18 at 32 px on it (two epochs at N, one at 4N), each run
in a fresh process:

- ``ray``: ``run_training(folder:ROOT, ...)``: shards read, decoded and resized in Ray tasks, one Ray
  Train worker, the cifar geometry (pad-4 crop + flip on the worker), validation on 1,000 images (one per class), then
  Ray batch prediction of them. Reported per epoch: the training time (``train_s``), the share of it
  the worker waited for data (``data_wait_frac``) and the first batch's wait; driver peak RSS and the
  whole call.
- ``dataloader``: a plain torch loop fed by a ``torch.utils.data.DataLoader`` over the same folder
  (``torchvision.datasets.ImageFolder``, PIL decode + bilinear resize to 32 + the same crop / flip,
  ``num_workers`` decode processes on the same 2 cores), same model, batch size and threads.

Targets (issue 11): driver peak RSS 4N / N <= 1.15; data wait <= 10% of each Ray epoch; each Ray
epoch <= 1.10x the same DataLoader epoch. The end-to-end smoke run (``--smoke``) scores a 1,000-class layout,
trains one epoch and evaluates, timed.

Run: python benchmarks/training_scale.py [--n 4000] [--smoke-n 2000]
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
from scoring_scale import make_imagenet_layout  # noqa: E402

WIDTH, BATCH, SIDE, LR = 0.25, 64, 32, 0.05


def _config(epochs: int = 1, *, width: float = WIDTH, batch: int = BATCH, **overrides):
    from rmd_ray.distributed.training import TrainConfig
    from rmd_ray.nn.engine import OptimConfig

    return TrainConfig(
        loss="ce", width=width, batch_size=batch, image_size=SIDE, preset="cifar", cpus_per_worker=1.0,
        optim=OptimConfig(lr=LR, epochs=epochs), max_failures=0, eval_every=epochs, **overrides,
    )


def _child_ray(root: str, val_root: str, output: str, options: str = "{}") -> None:
    import resource
    import warnings

    import ray

    from rmd_ray.distributed.runtime.cluster import init_ray
    from rmd_ray.distributed.training import run_training

    warnings.simplefilter("ignore")
    init_ray(include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    opts = json.loads(options)  # gpu_check: {"epochs": 2, "use_gpu": true, "width": 1.0, "batch": 256}
    start = time.perf_counter()
    config = _config(opts.get("epochs", 1), width=opts.get("width", WIDTH), batch=opts.get("batch", BATCH),
                     use_gpu=opts.get("use_gpu", False), num_workers=opts.get("workers", 1))
    result = run_training(f"folder:{root}", val=f"folder:{val_root}", config=config, output_dir=output,
                          run_name="ray")
    seconds = time.perf_counter() - start
    epoch = result.epochs[-1]  # the last: with 2 epochs, after Ray Data's first execution warmed up
    print(json.dumps({
        "seconds": seconds, "train_s": epoch["train_s"], "data_wait_frac": epoch["data_wait_frac"],
        "epochs": [{k: e[k] for k in ("train_s", "data_wait_frac", "first_batch_s")} for e in result.epochs],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


def _child_dataloader(root: str, workers: int, options: str = "{}") -> None:
    """What a user would write instead: ImageFolder + DataLoader workers + a plain loop, same model and step."""
    import functools
    import resource

    import torch
    from torchvision import datasets
    from torchvision.transforms import v2 as T

    from rmd_ray.nn import engine
    from rmd_ray.nn.losses import build_loss
    from rmd_ray.nn.models import build_model
    from rmd_ray.nn.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_uint8

    opts = json.loads(options)
    device = torch.device("cuda" if opts.get("use_gpu") else "cpu")
    width, batch, epochs = opts.get("width", WIDTH), opts.get("batch", BATCH), opts.get("epochs", 1)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dataset = datasets.ImageFolder(
        root, transform=T.Compose([T.Resize((SIDE, SIDE)), T.PILToTensor()])
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=False,
        persistent_workers=False, pin_memory=device.type == "cuda",
    )
    model = build_model("resnet18", num_classes=len(dataset.classes), cifar_stem=True, width=width).to(device)
    cfg = _config(epochs, width=width, batch=batch).optim
    optimizer = engine.build_optimizer(model, cfg)
    scheduler = engine.build_scheduler(optimizer, cfg, steps_per_epoch=len(loader))
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    gen = torch.Generator().manual_seed(0)

    def batches():
        for i, (images, labels) in enumerate(loader):
            images = images.to(device, non_blocking=True).permute(0, 2, 3, 1)
            yield {"image": normalize_uint8(images, mean, std), "label": labels,
                   "id": torch.arange(i * batch, i * batch + len(labels))}

    per_epoch = []
    for _ in range(epochs):  # every epoch timed; the last is reported as train_s, as the Ray side does
        start = time.perf_counter()
        engine.train_one_epoch(
            model, batches(), build_loss("ce").to(device), optimizer, scheduler=scheduler, device=device,
            amp=device.type == "cuda", augment=functools.partial(engine.random_crop_flip, generator=gen),
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        per_epoch.append(seconds)
    print(json.dumps({"seconds": seconds, "train_s": seconds, "epochs": per_epoch,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _child_smoke(root: str, val_root: str, output: str) -> None:
    """ImageNet layout end to end: score (EfficientNet-Lite0 64 px) -> train ResNet-18 1 epoch -> evaluate."""
    import warnings

    import ray

    from rmd_ray.core.metrics import evaluate_predictions
    from rmd_ray.distributed.runtime.cluster import init_ray
    from rmd_ray.distributed.scoring.run import EncoderSpec, ExtractConfig, run_scoring
    from rmd_ray.distributed.training import run_training
    from rmd_ray.evaluation.evaluate import load_predictions

    warnings.simplefilter("ignore")
    init_ray(include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    times = {}
    tic = time.perf_counter()
    scored = run_scoring(f"folder:{root}", output_dir=f"{output}/scores",
                         encoder=EncoderSpec("efficientnet_lite0", image_size=64), extract=ExtractConfig(batch_size=64))
    times["score_s"] = time.perf_counter() - tic
    tic = time.perf_counter()
    result = run_training(f"folder:{root}", val=f"folder:{val_root}", test=f"folder:{val_root}",
                          scores=scored.scores_path, config=_proposed(),
                          output_dir=f"{output}/train", run_name="proposed")
    times["train_s"] = time.perf_counter() - tic
    tic = time.perf_counter()
    _, labels, logits = load_predictions(result.predictions["test"])
    metrics = evaluate_predictions(logits, labels)
    times["evaluate_s"] = time.perf_counter() - tic
    print(json.dumps({**times, "rows_scored": scored.rows_scored, "test_rows": int(len(labels)),
                      "test_acc": float(metrics["acc"]), "test_ece_mass": float(metrics["ece_mass"])}))


def _proposed():
    from dataclasses import replace

    return replace(_config(), loss="proposed", loss_hparams=(("alpha", 0.2),))


def _run(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"child {args[0]} failed:\n{done.stderr[-4000:]}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--smoke-n", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader decode processes")
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        mode, *rest = args.child
        {"ray": _child_ray, "dataloader": lambda r, w, *o: _child_dataloader(r, int(w), *o),
         "smoke": _child_smoke}[mode](*rest)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        val = make_imagenet_layout(tmp / "val", 1000, size=48, seed=1)  # one image per class
        rows, runs = [], {}
        for n, epochs in ((args.n, 2), (4 * args.n, 1)):
            root = make_imagenet_layout(tmp / f"train{n}", n, size=48)
            ray_run = _run("ray", str(root), str(val), str(tmp / f"out{n}"), json.dumps({"epochs": epochs}))
            runs[n] = ray_run
            for i, e in enumerate(ray_run["epochs"], 1):
                rows.append([f"ray ({n:,} images), epoch {i}", f"{e['train_s']:.1f}",
                             f"{100 * e['data_wait_frac']:.1f}%", f"{e['first_batch_s']:.1f}",
                             f"{ray_run['seconds']:.1f}" if i == 1 else "",
                             f"{ray_run['peak_rss_mib']:.0f}" if i == 1 else ""])
            if n == args.n:
                base = _run("dataloader", str(root), str(args.workers), json.dumps({"epochs": epochs}))
                runs["dataloader"] = base
                for i, seconds in enumerate(base["epochs"], 1):
                    rows.append([f"DataLoader loop ({n:,} images, {args.workers} worker), epoch {i}", f"{seconds:.1f}",
                                 "", "", "", f"{base['peak_rss_mib']:.0f}" if i == 1 else ""])
        smoke = _run("smoke", str(make_imagenet_layout(tmp / "smoke", args.smoke_n, size=64, seed=2)), str(val),
                     str(tmp / "smoke_out"))
    rss_ratio = runs[4 * args.n]["peak_rss_mib"] / runs[args.n]["peak_rss_mib"]
    ray_epochs, base_epochs = runs[args.n]["epochs"], runs["dataloader"]["epochs"]
    ratios = [r["train_s"] / b for r, b in zip(ray_epochs, base_epochs)]
    smoke_total = smoke["score_s"] + smoke["train_s"] + smoke["evaluate_s"]
    waits = ", ".join(f"epoch {i}: **{100 * e['data_wait_frac']:.1f}%**" for i, e in enumerate(ray_epochs, 1))
    text = "\n".join([
        "# training_scale", "",
        f"{machine_line()}; ImageNet layout (1,000 class folders, 48 px JPEGs), ResNet-18 width {WIDTH} at "
        f"{SIDE} px, batch {BATCH}, 1 Ray Train worker (1 CPU, 1 torch thread, decode tasks: the default, one "
        f"per core the worker leaves = 1 here); N = {args.n:,}: 2 epochs on each side, 4N: 1 epoch; every run in a "
        "fresh process.",
        "",
        markdown_table(["run", "epoch (train) s", "data wait", "first batch s", "whole call s", "peak RSS MiB"], rows),
        "",
        f"- driver peak RSS 4N / N: **{rss_ratio:.3f}** (target <= 1.15)",
        f"- data wait per Ray epoch at N: {waits} of the training steps' time (4N, epoch 1: "
        f"**{100 * runs[4 * args.n]['data_wait_frac']:.1f}%**; target <= 10%)",
        "- Ray epoch / DataLoader epoch at N: " + ", ".join(
            f"epoch {i}: **{r:.2f}x**" for i, r in enumerate(ratios, 1)) + " (target <= 1.10x)",
        f"- smoke run, {args.smoke_n:,} images in 1,000 classes (64 px JPEGs): score {smoke['score_s']:.0f} s, "
        f"train ResNet-18 1 epoch (proposed loss) + predict {smoke['train_s']:.0f} s, evaluate "
        f"{smoke['evaluate_s']:.1f} s; total **{smoke_total / 60:.1f} min** (target < 10); "
        f"{smoke['rows_scored']} rows scored, {smoke['test_rows']} test rows predicted once each, "
        f"test ACC {100 * smoke['test_acc']:.1f}% (chance 0.1%).",
        "",
        "Epoch 1 of a Ray run includes the pipeline's start-up (Ray Data's executor and a fresh decode process: "
        "the first-batch column); later epochs reuse both. The whole-call time also includes Ray Train's "
        "start-up, the channel-statistics pass and the batch prediction of the validation split, which the "
        "DataLoader loop does not do; the ratios compare epochs.",
    ])
    print(text)
    write_result("training_scale.md", text + "\n")


if __name__ == "__main__":
    main()
