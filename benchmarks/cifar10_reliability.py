"""CIFAR-10 reliability within a CPU budget: CE vs entropy regularisation vs the proposed loss.

Regime (docs/design.md 1.7): an entropy bonus only helps where CE is overconfident, which on a CPU budget
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
test (paper Fig. 2) of the CE model on the test set. The seed-0 CE and proposed models are saved and
evaluated under the 19 ImageNet-C-style corruptions at 5 severities (CIFAR-10-C severity table) on the
same test images, and ``rmd-ray report``'s builder writes the HTML report of the seed-0 runs (reliability
diagrams, accuracy-rejection gap, ECE-vs-severity box plots, hardest/easiest galleries, weight
histograms, proxy test). This script trains in-process with the torch layer (rmd_ray.nn.engine), not
through Ray Train: it measures the method, not the framework.

Run: python benchmarks/cifar10_reliability.py [--seeds 3] [--epochs 20]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA_ROOT, machine_line, markdown_table, write_result  # noqa: E402
from _inprocess import logits_of, normaliser, train_model  # noqa: E402

DATA = DATA_ROOT / "cifar10"


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
    md_train, rmd_train = scorer.score(f_train, y_train)
    train = {"md": md_train, "rmd": rmd_train, "nearest_class": scorer.class_distances(f_train).argmin(axis=1)}
    return train, scorer.score(f_test, y_test)[1]


def train_and_predict(images, labels, weights, test_images, test_labels, *, loss, hparams, epochs, seed, width):
    to_tensor = normaliser(images)
    model = train_model(images, labels, weights, loss=loss, hparams=hparams, epochs=epochs, seed=seed, width=width,
                        to_tensor=to_tensor, num_classes=int(labels.max()) + 1)
    return model, logits_of(model, test_images, to_tensor).astype(np.float32)


def train_and_predict_ray(images, labels, weights, test_images, test_labels, *, loss, hparams, epochs, seed, width,
                          output, name):
    """The same run through the framework: ``run_training`` (Ray Data streaming ingest, Ray Train, Ray
    batch prediction) on in-memory tables, same model, optimiser, schedule, batch and augmentation."""
    import pyarrow as pa

    from rmd_ray.data.readers import from_arrays
    from rmd_ray.distributed.training import TrainConfig, run_training
    from rmd_ray.io.parts import read_table
    from rmd_ray.nn import engine

    classes = [str(k) for k in range(int(labels.max()) + 1)]
    train = from_arrays(images, labels, ids=[f"train{i}" for i in range(len(labels))], classes=classes)
    test = from_arrays(test_images, test_labels, ids=[f"test{i:05d}" for i in range(len(test_labels))],
                       classes=classes)
    config = TrainConfig(
        model="resnet18", width=width, cifar_stem=True, loss=loss, loss_hparams=hparams, batch_size=128,
        optim=engine.OptimConfig(lr=0.05, epochs=epochs, schedule="cosine", weight_decay=5e-4),
        preset="cifar", normalization="data", augment=True, seed=seed, eval_every=epochs, max_failures=0,
    )
    scores = pa.table({"id": train.column("id"), "weight": weights.astype(np.float64)})
    # the test images are the validation split: evaluated once, after the last epoch (nothing is selected on them)
    result = run_training(train, val=test, scores=scores if loss == "proposed" else None, config=config,
                          output_dir=str(Path(output).resolve()), run_name=f"{name}_seed{seed}")
    table = read_table(result.predictions["val"]).sort_by("id")
    return None, np.stack(table.column("logits").to_numpy(zero_copy_only=False)).astype(np.float64)


def corruption_summary(rows_by_method: dict[str, list[dict]]) -> str:
    """Markdown table: ACC and equal-mass ECE per severity, mean (min-max) over corruption types."""
    severities = sorted({r["severity"] for rows in rows_by_method.values() for r in rows})
    header = ["severity"] + [f"{m} {k}" for m in rows_by_method for k in ("ACC %", "ECE mass %")]
    table = []
    for severity in severities:
        line = ["clean" if severity == 0 else str(severity)]
        for rows in rows_by_method.values():
            for key in ("acc", "ece_mass"):
                values = 100 * np.array([r[key] for r in rows if r["severity"] == severity])
                line.append(
                    f"{values.mean():.2f}"
                    if len(values) == 1
                    else f"{values.mean():.2f} ({values.min():.1f}-{values.max():.1f})"
                )
        table.append(line)
    return markdown_table(header, table)


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
    parser.add_argument(
        "--results-name",
        default="cifar10_reliability.md",
        help="file name under benchmarks/results (change it for smoke runs so the recorded result stays)",
    )
    parser.add_argument(
        "--through-ray", action="store_true",
        help="train and predict through run_training (streaming ingest, Ray Train); no corruption shift or report",
    )
    args = parser.parse_args()
    if not (DATA / "train.parquet").is_file():
        sys.exit(f"skipped: {DATA} not found (the shared CIFAR-10 Parquet)")

    import pyarrow as pa
    import torch

    from rmd_ray.core import difficulty_weights
    from rmd_ray.core.metrics import evaluate_predictions, softmax
    from rmd_ray.data.corruptions import available_corruptions
    from rmd_ray.evaluation.corruption import corruption_eval
    from rmd_ray.evaluation.proxy import difficulty_proxy_test
    from rmd_ray.evaluation.report import build_report
    from rmd_ray.io.storage import write_json_atomic, write_parquet_atomic
    from rmd_ray.nn.engine import save_checkpoint

    torch.set_num_threads(args.threads)
    if args.through_ray:
        import ray

        from rmd_ray.distributed.runtime.cluster import init_ray

        init_ray(include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
    start = time.perf_counter()
    train_table, images, labels = load_split("train", classes=args.classes, per_class=args.per_class)
    test_table, test_images, test_labels = load_split("test", classes=args.classes, per_class=None)
    train_scores, rmd_test = rmd_scores(train_table, test_table, image_size=64)
    weights = difficulty_weights(train_scores["rmd"])
    print(f"data + scores in {time.perf_counter() - start:.0f} s; mean(s) = {weights.mean():.3f}", flush=True)

    methods = {
        "ce": ("ce", {}),
        "er": ("entropy_reg", {"beta": args.alpha}),
        "er_matched": ("entropy_reg", {"beta": args.alpha * float(weights.mean())}),
        "proposed": ("proposed", {"alpha": args.alpha}),
    }
    shifted = ("ce", "proposed")  # the seed-0 models evaluated under corruption
    output = Path(args.output)
    results: dict[str, list[dict]] = {m: [] for m in methods}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    seed0_models = {}
    proxy = None
    test_ids = test_table.column("id")
    for seed in range(args.seeds):
        for name, (loss, hparams) in methods.items():
            tic = time.perf_counter()
            train_fn = train_and_predict
            if args.through_ray:
                # a fresh folder per invocation: run_training continues a run found under the same name
                train_fn = functools.partial(train_and_predict_ray, output=output / f"ray_{stamp}", name=name)
            model, logits = train_fn(
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
            if seed == 0 and name in shifted and model is not None:
                seed0_models[name] = model
                save_checkpoint(
                    output / f"model_{name}_seed0.pt",
                    model=model,
                    optimizer=None,
                    scheduler=None,
                    epoch=args.epochs,
                    extra={"loss": loss, "hparams": hparams, "width": args.width, "classes": args.classes},
                )
            if name == "ce" and seed == 0:
                proxy = difficulty_proxy_test(
                    test_ids.to_pylist(), rmd_test, test_ids.to_pylist(), test_labels, logits, n_groups=5
                )
                write_json_atomic(output / "proxy_ce_seed0.json", proxy.to_dict())
    write_parquet_atomic(
        pa.table({"id": train_table.column("id"), "label": labels, **train_scores, "weight": weights}),
        output / "train_scores.parquet",
        metadata={"classes": [str(k) for k in range(args.classes)], "encoder": "efficientnet_lite0 (64 px)"},
    )

    shift = None
    if not args.through_ray:  # the framework run reproduces the table; the shift is the model's business
        tic = time.perf_counter()
        corruptions, _ = available_corruptions()  # all 19, or 18 without frost's textures
        shift = {
            name: corruption_eval(
                seed0_models[name],
                test_images,
                test_labels,
                corruptions=corruptions,
                preprocess=normaliser(images),
                batch_size=500,
                seed=0,
                preset="cifar",
            )
            for name in shifted
        }
        write_json_atomic(output / "corruption_seed0.json", shift)
        shift_seconds = time.perf_counter() - tic
        print(f"corruption eval in {shift_seconds:.0f} s", flush=True)
        report = build_report(
            runs={name: output / f"predictions_{name}_seed0.parquet" for name in methods},
            scores_path=output / "train_scores.parquet",
            source=f"parquet:{DATA / 'train.parquet'}",
            corruption_results=shift,
            proxy_results={"RMD, EfficientNet-Lite0 (CE model)": proxy},
            output_dir=output / "report",
            title="rmd-ray: CIFAR-10 classes 0-4, seed 0",
            compare=list(shifted),
        )
        print("report:", report, flush=True)

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
    mean_ece = {
        name: 100 * np.mean([r["ece_mass"] for r in rows_ if r["severity"] > 0])
        for name, rows_ in (shift or {}).items()
    }
    trained = ("through rmd_ray.distributed.training.run_training (Ray Data streaming ingest, one Ray Train worker, "
               "Ray batch prediction)" if args.through_ray else "in-process (rmd_ray.nn.engine)")
    text = (
        f"# cifar10_reliability\n\n{machine_line()}; trained {trained}; CIFAR-10 classes 0-{args.classes - 1}: "
        f"{len(labels):,} train / {len(test_labels):,} test images; ResNet-18 width {args.width}, CIFAR stem, "
        f"{args.epochs} epochs, SGD lr 0.05 cosine, wd 5e-4, batch 128, crop+flip; {args.seeds} seeds "
        f"(mean +- std); alpha = {args.alpha}, T = 0.7, min-max RMD from EfficientNet-Lite0 at 64 px "
        f"(mean s = {weights.mean():.3f}, so matched ER beta = {args.alpha * weights.mean():.4f}). "
        f"Total {time.perf_counter() - start:.0f} s.\n\n{markdown_table(header, rows)}\n\n"
        f"Difficulty proxy test (CE seed 0, test set split by RMD into 5 groups, hardest first): error rate "
        f"{', '.join(f'{100 * e:.1f}%' for e in proxy.error_rate)}; Spearman(RMD, loss) = {proxy.spearman:.3f}.\n"
    )
    if shift is not None:
        text += (
            f"\nCorruption shift (seed-0 models, all {len(test_labels):,} test images, {len(corruptions)} corruptions "
            f"x 5 severities, CIFAR-10-C severity table, {shift_seconds:.0f} s): mean (min-max) over corruption "
            f"types. Mean ECE mass over all corrupted sets: "
            f"{', '.join(f'{name} {value:.2f}%' for name, value in mean_ece.items())}.\n\n"
            f"{corruption_summary(shift)}\n"
        )
    print(text)
    print("written to", write_result(args.results_name, text))
    write_json_atomic(output / "results.json", results)


if __name__ == "__main__":
    main()
