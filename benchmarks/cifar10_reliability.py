"""CIFAR-10 reliability within a CPU budget: CE vs entropy regularisation vs the proposed loss.

Regime (DESIGN.md 1.7): an entropy bonus only helps where CE is overconfident, which on a CPU budget
means few samples and comparatively many epochs. We train a width-1/8 ResNet-18 (CIFAR stem) on
5,000 real CIFAR-10 training images of classes 0-4 (1,000 per class), test on the 5,000 test images
of classes 0-4, for every method and seed with the same budget:

- ``ce``: cross-entropy;
- ``er``: constant-weight entropy regularisation with beta = alpha = 0.3 (the paper's ER baseline);
- ``er_matched``: ER with beta = alpha * mean(s), the proposed loss's mean strength (the control that
  decides whether difficulty-awareness matters);
- ``proposed``: CE - alpha * s_i * H(p_i), s from EfficientNet-Lite0 RMD (64 px, min-max, T = 0.7).

Reported as mean +- std over seeds: ACC, ECE (15 equal-mass and equal-width bins), NLL; plus whether
CE's reliability diagram leans overconfident (mean confidence - accuracy), and the difficulty proxy
test (paper Fig. 2) of the CE model on the test set. This script trains in-process with the torch
layer (rmd_ray.nn.engine), not through Ray Train: it measures the method, not the framework.

Run: python benchmarks/cifar10_reliability.py [--seeds 3] [--epochs 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, markdown_table, write_result  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"


def load_split(split: str, *, classes: int, per_class: int | None):
    import pyarrow.compute as pc

    from rmd_ray.data.decode import decode_image
    from rmd_ray.data.readers import read_parquet_images

    table = read_parquet_images(DATA / f"{split}.parquet")
    table = table.filter(pc.less(table.column("label"), classes))
    if per_class is not None:
        labels = table.column("label").to_numpy()
        keep = np.concatenate([np.flatnonzero(labels == k)[:per_class] for k in range(classes)])
        table = table.take(np.sort(keep))
    images = np.stack([np.asarray(decode_image(r)) for r in table.to_pylist()])
    return table, images, table.column("label").to_numpy().astype(np.int64)


def rmd_scores(train_table, test_table, *, image_size: int):
    import torch

    from rmd_ray.core import CovarianceConfig, DifficultyScorer
    from rmd_ray.data.decode import decode_batch
    from rmd_ray.nn.encoders import build_encoder

    encoder = build_encoder("efficientnet_lite0", image_size=image_size)

    def features(table):
        out = []
        for start in range(0, table.num_rows, 256):
            batch, _, errors = decode_batch(table.slice(start, 256), preprocess=encoder.preprocess)
            assert not errors
            with torch.inference_mode():
                out.append(encoder.model(batch).numpy())
        return np.concatenate(out).astype(np.float64)

    f_train, f_test = features(train_table), features(test_table)
    y_train = train_table.column("label").to_numpy().astype(np.int64)
    y_test = test_table.column("label").to_numpy().astype(np.int64)
    scorer = DifficultyScorer(n_classes=int(y_train.max()) + 1, covariance=CovarianceConfig(shrinkage="ridge"))
    scorer.fit(f_train, y_train)
    return scorer.score(f_train, y_train)[1], scorer.score(f_test, y_test)[1]


def train_and_predict(images, labels, weights, test_images, test_labels, *, loss, hparams, epochs, seed, width):
    import torch

    from rmd_ray.nn import engine
    from rmd_ray.nn.losses import build_loss
    from rmd_ray.nn.models import build_model

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    mean = images.reshape(-1, 3).mean(0) / 255.0
    std = images.reshape(-1, 3).std(0) / 255.0

    def to_tensor(x):
        t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0
        return (t - torch.tensor(mean, dtype=torch.float32)[:, None, None]) / torch.tensor(std, dtype=torch.float32)[
            :, None, None
        ]

    x, xt = to_tensor(images), to_tensor(test_images)
    y, yt = torch.from_numpy(labels), torch.from_numpy(test_labels)
    w = torch.from_numpy(weights.astype(np.float32))
    model = build_model("resnet18", num_classes=int(labels.max()) + 1, cifar_stem=True, width=width)
    config = engine.OptimConfig(lr=0.05, epochs=epochs, schedule="cosine", weight_decay=5e-4)
    optimizer = engine.build_optimizer(model, config)
    batch = 128
    steps = int(np.ceil(len(y) / batch))
    scheduler = engine.build_scheduler(optimizer, config, steps_per_epoch=steps)
    loss_fn = build_loss(loss, **hparams)

    def batches():
        order = torch.randperm(len(y), generator=generator)
        for i in range(0, len(y), batch):
            idx = order[i : i + batch]
            yield {"image": x[idx], "label": y[idx], "weight": w[idx], "id": idx}

    for _ in range(epochs):
        engine.train_one_epoch(
            model,
            batches(),
            loss_fn,
            optimizer,
            scheduler=scheduler,
            device="cpu",
            augment=lambda im: engine.random_crop_flip(im, generator=generator),
        )
    test_batches = (
        {"image": xt[i : i + 500], "label": yt[i : i + 500], "id": torch.arange(i, min(i + 500, len(yt)))}
        for i in range(0, len(yt), 500)
    )
    _, _, logits = engine.predict(model, test_batches, device="cpu")
    return logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--alpha", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default="runs/cifar10_reliability")
    args = parser.parse_args()
    if not (DATA / "train.parquet").is_file():
        sys.exit(f"skipped: {DATA} not found (the shared CIFAR-10 Parquet)")

    import pyarrow as pa
    import torch

    from rmd_ray.core import difficulty_weights
    from rmd_ray.core.metrics import evaluate_predictions, softmax
    from rmd_ray.data.io import write_parquet_atomic
    from rmd_ray.evaluation.proxy import difficulty_proxy_test

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    train_table, images, labels = load_split("train", classes=args.classes, per_class=args.per_class)
    test_table, test_images, test_labels = load_split("test", classes=args.classes, per_class=None)
    rmd_train, rmd_test = rmd_scores(train_table, test_table, image_size=64)
    weights = difficulty_weights(rmd_train)
    print(f"data + scores in {time.perf_counter() - start:.0f} s; mean(s) = {weights.mean():.3f}", flush=True)

    methods = {
        "ce": ("ce", {}),
        "er": ("entropy_reg", {"beta": args.alpha}),
        "er_matched": ("entropy_reg", {"beta": args.alpha * float(weights.mean())}),
        "proposed": ("proposed", {"alpha": args.alpha}),
    }
    output = Path(args.output)
    results: dict[str, list[dict]] = {m: [] for m in methods}
    test_ids = test_table.column("id")
    for seed in range(args.seeds):
        for name, (loss, hparams) in methods.items():
            tic = time.perf_counter()
            logits = train_and_predict(
                images,
                labels,
                weights,
                test_images,
                test_labels,
                loss=loss,
                hparams=hparams,
                epochs=args.epochs,
                seed=seed,
                width=args.width,
            )
            metrics = evaluate_predictions(logits, test_labels)
            probs = softmax(logits)
            metrics["overconfidence"] = float(probs.max(1).mean() - metrics["acc"])
            results[name].append(metrics)
            write_parquet_atomic(
                pa.table(
                    {
                        "id": test_ids,
                        "label": test_labels,
                        "logits": pa.array(list(logits.astype(np.float32)), pa.list_(pa.float32())),
                    }
                ),
                output / f"predictions_{name}_seed{seed}.parquet",
                metadata={"loss": loss, "hparams": hparams, "epochs": args.epochs, "seed": seed},
            )
            print(
                f"seed {seed} {name:<11} acc {metrics['acc']:.4f} ece_mass {metrics['ece_mass']:.4f} "
                f"({time.perf_counter() - tic:.0f} s)",
                flush=True,
            )
            if name == "ce" and seed == 0:
                proxy = difficulty_proxy_test(
                    test_ids.to_pylist(), rmd_test, test_ids.to_pylist(), test_labels, logits, n_groups=5
                )
                (output / "proxy_ce_seed0.json").write_text(json.dumps(proxy.to_dict(), default=float))
    write_parquet_atomic(
        pa.table(
            {
                "id": train_table.column("id"),
                "label": labels,
                "rmd": rmd_train,
                "md": rmd_train,
                "weight": weights,
                "nearest_class": labels,
            }
        ),
        output / "train_scores.parquet",
        metadata={"classes": [str(k) for k in range(args.classes)]},
    )

    def cell(name, key, scale=100.0):
        values = np.array([r[key] for r in results[name]]) * scale
        return f"{values.mean():.2f} +- {values.std(ddof=1) if len(values) > 1 else 0:.2f}"

    rows = [
        [
            name,
            cell(name, "acc"),
            cell(name, "ece_mass"),
            cell(name, "ece_width"),
            cell(name, "nll", 1.0),
            cell(name, "overconfidence"),
        ]
        for name in methods
    ]
    header = ["method", "ACC %", "ECE mass %", "ECE width %", "NLL", "conf - acc %"]
    proxy = json.loads((output / "proxy_ce_seed0.json").read_text())
    text = (
        f"# cifar10_reliability\n\n{machine_line()}; CIFAR-10 classes 0-{args.classes - 1}: "
        f"{len(labels):,} train / {len(test_labels):,} test images; ResNet-18 width {args.width}, CIFAR stem, "
        f"{args.epochs} epochs, SGD lr 0.05 cosine, wd 5e-4, batch 128, crop+flip; {args.seeds} seeds "
        f"(mean +- std); alpha = {args.alpha}, T = 0.7, min-max RMD from EfficientNet-Lite0 at 64 px "
        f"(mean s = {weights.mean():.3f}, so matched ER beta = {args.alpha * weights.mean():.4f}). "
        f"Total {time.perf_counter() - start:.0f} s.\n\n{markdown_table(header, rows)}\n\n"
        f"Difficulty proxy test (CE seed 0, test set split by RMD into 5 groups, hardest first): error rate "
        f"{', '.join(f'{100 * e:.1f}%' for e in proxy['error_rate'])}; Spearman(RMD, loss) = {proxy['spearman']:.3f}.\n"
    )
    print(text)
    print("written to", write_result("cifar10_reliability.md", text))
    (output / "results.json").write_text(json.dumps(results, default=float))


if __name__ == "__main__":
    main()
