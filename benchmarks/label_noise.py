"""Label-noise detection on real data: RMD, margin and combined rankings against cleanlab.

10,000 CIFAR-10 training images (a seeded subset), embedded once with the default encoder
(EfficientNet-Lite0, ImageNet weights) at 64 px: features do not depend on the labels. Four noise
settings, each on those same features:

- symmetric 10% / 20%: that fraction of all samples gets a label drawn uniformly from the other classes;
- asymmetric 20% / 40%: per source class, that fraction of truck -> automobile, bird -> airplane,
  deer -> horse, cat -> dog and dog -> cat (Patrini et al. 2017), other classes untouched.

For each setting every ranking flags the flipped samples; we report AUROC, AP (flipped = positive)
and the wall time after features:

- rmd / margin / combined (rmd_ray.core.label_ranking): fit the Gaussians on the noisy labels
  (shrinkage ridge, the CLI default), score, rank. One fit serves all three.
- cleanlab: 5-fold out-of-fold probabilities of a logistic regression on the standardised features,
  then ``cleanlab.rank.get_label_quality_scores(method="self_confidence")`` (ranked lowest first) and
  ``cleanlab.filter.find_label_issues`` (its default filter, reported as precision/recall of the flags).

Run: python benchmarks/label_noise.py [--n 10000] [--image-size 64]
(needs the benchmark extra: pip install -e '.[benchmark]')
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, markdown_table, write_result  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10" / "train.parquet"
# CIFAR-10 class order: airplane 0, automobile 1, bird 2, cat 3, deer 4, dog 5, frog 6, horse 7, ship 8, truck 9
ASYMMETRIC = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
SETTINGS = (("symmetric", 0.1), ("symmetric", 0.2), ("asymmetric", 0.2), ("asymmetric", 0.4))


def flip_symmetric(labels: np.ndarray, *, rate: float, n_classes: int, seed: int) -> np.ndarray:
    """``rate`` of all samples get a label drawn uniformly from the other classes; returns noisy labels."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(labels), size=int(round(rate * len(labels))), replace=False)
    noisy = labels.copy()
    noisy[idx] = (labels[idx] + rng.integers(1, n_classes, size=idx.size)) % n_classes
    return noisy


def flip_asymmetric(labels: np.ndarray, *, rate: float, seed: int) -> np.ndarray:
    """Per source class in ASYMMETRIC, ``rate`` of its samples (rounded) move to the target class."""
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    for source, target in ASYMMETRIC.items():
        members = np.flatnonzero(labels == source)  # the clean labels: cat<->dog swaps both ways
        noisy[rng.choice(members, size=int(round(rate * members.size)), replace=False)] = target
    return noisy


def embed(table, *, image_size: int, batch: int = 256) -> np.ndarray:
    """Features of every image, in-process (the encoder is the cost; Ray adds only start-up here)."""
    import io

    import torch
    from PIL import Image

    from rmd_ray.nn.encoders import build_encoder, encode

    torch.set_num_threads(1)  # docs/design.md section 6: the 2-core machine is shared
    encoder = build_encoder("efficientnet_lite0", image_size=image_size)
    images = table.column("image").to_pylist()
    out = []
    for start in range(0, len(images), batch):
        x = torch.stack([encoder.preprocess(Image.open(io.BytesIO(b)).convert("RGB"))
                         for b in images[start:start + batch]])
        out.append(encode(encoder, x))
    return np.concatenate(out)


def rmd_rankings(features: np.ndarray, noisy: np.ndarray) -> dict[str, np.ndarray]:
    from rmd_ray.core import CovarianceConfig, DifficultyScorer
    from rmd_ray.core.label_ranking import label_issue_scores, mahalanobis_margin

    scorer = DifficultyScorer(n_classes=10, covariance=CovarianceConfig(shrinkage="ridge")).fit(features, noisy)
    _, rmd = scorer.score(features, noisy)
    margin = mahalanobis_margin(scorer.class_distances(features), noisy)
    return {name: label_issue_scores(rmd, margin, score=name) for name in ("rmd", "margin", "combined")}


def cleanlab_ranking(features: np.ndarray, noisy: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(suspicion = 1 - self-confidence, boolean flags of find_label_issues) from 5-fold OOF LR."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    probs = cross_val_predict(model, features, noisy, cv=folds, method="predict_proba")
    quality = get_label_quality_scores(noisy, probs, method="self_confidence")
    flags = find_label_issues(noisy, probs)
    return 1.0 - quality, flags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="seeded random subset of the 50,000 training images")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--features-cache", default="runs/label_noise/features.npz",
                        help="features + clean labels saved here after embedding, reused when present")
    args = parser.parse_args()
    if not SHARED.is_file():
        sys.exit(f"skipped: {SHARED} not found (the shared CIFAR-10 Parquet)")
    from sklearn.metrics import average_precision_score, precision_score, recall_score, roc_auc_score

    cache = Path(args.features_cache)
    if cache.is_file():
        saved = np.load(cache)
        features, clean, embed_s = saved["features"], saved["labels"], float(saved["seconds"])
    else:
        from rmd_ray.data.readers import read_parquet_images

        table = read_parquet_images(SHARED)
        keep = np.sort(np.random.default_rng(args.seed).choice(table.num_rows, size=args.n, replace=False))
        table = table.take(keep)
        start = time.perf_counter()
        features = embed(table, image_size=args.image_size)
        embed_s = time.perf_counter() - start
        clean = table.column("label").to_numpy().astype(np.int64)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, features=features, labels=clean, seconds=embed_s)

    rows, wins = [], {}
    for kind, rate in SETTINGS:
        if kind == "symmetric":
            noisy = flip_symmetric(clean, rate=rate, n_classes=10, seed=args.seed)
        else:
            noisy = flip_asymmetric(clean, rate=rate, seed=args.seed)
        flipped = noisy != clean
        start = time.perf_counter()
        ours = rmd_rankings(features, noisy)
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        theirs, flags = cleanlab_ranking(features, noisy, args.seed)
        theirs_s = time.perf_counter() - start
        setting = f"{kind} {rate:.0%} ({int(flipped.sum()):,} flipped)"
        cl_auroc = roc_auc_score(flipped, theirs)
        for name, score in (*ours.items(), ("cleanlab self-confidence", theirs)):
            auroc = roc_auc_score(flipped, score)
            seconds = ours_s if name in ours else theirs_s
            if name in ours:
                wins.setdefault(name, []).append(auroc > cl_auroc)
            rows.append([setting, name, f"{auroc:.4f}", f"{average_precision_score(flipped, score):.4f}",
                         f"{seconds:.2f}", f"{seconds / theirs_s:.3f}"])
        rows.append([setting, "cleanlab find_label_issues flags", "-", "-", "-",
                     f"precision {precision_score(flipped, flags):.3f}, recall {recall_score(flipped, flags):.3f}"])
        print(rows[-5:], flush=True)
    header = ["noise", "ranking", "AUROC", "AP", "seconds after features", "time / cleanlab"]
    verdict = ", ".join(f"{name} beats cleanlab's AUROC in {sum(w)}/4 settings" for name, w in wins.items())
    text = (
        f"# label_noise\n\n{machine_line()}; CIFAR-10 train, {len(clean):,} images (seed {args.seed}), "
        f"efficientnet_lite0 at {args.image_size} px, embedded once in {embed_s:.0f} s (not in the times below). "
        "rmd / margin / combined share one Gaussian fit (shrinkage ridge) and so one time; cleanlab is 5-fold "
        "out-of-fold logistic regression (StandardScaler, max_iter 1000) + self-confidence. "
        f"Asymmetric flips per source class: truck->automobile, bird->airplane, deer->horse, cat<->dog.\n\n"
        f"{markdown_table(header, rows)}\n\n{verdict}.\n"
    )
    print(text)
    print("written to", write_result("label_noise.md", text))


if __name__ == "__main__":
    main()
