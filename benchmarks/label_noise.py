"""Label-noise detection on real data: RMD, margin and combined rankings against cleanlab and a kNN vote.

CIFAR-10 training images embedded once with the default encoder (EfficientNet-Lite0, ImageNet weights) at
64 px: features do not depend on the labels. Five noise settings:

- symmetric 10% / 20% on a seeded subset of 10,000 images: that fraction of all samples gets a label
  drawn uniformly from the other classes;
- asymmetric 20% / 40% on the same subset: per source class, that fraction of truck -> automobile,
  bird -> airplane, deer -> horse, cat -> dog and dog -> cat (Patrini et al. 2017), other classes untouched;
- CIFAR-10N (Wei et al. 2022) on all 50,000 images: real human labels, ``random_label1`` (one annotator,
  17.2% wrong, errors on ambiguous images) and ``aggre_label`` (majority vote, 9% wrong) where the shared
  labels file has that column.

Every ranking flags the mislabelled samples (positive = the label differs from the clean one); we report
AUROC, AP, precision among the top-ranked as many as there are mislabelled samples, and the wall time after
features:

- rmd / margin / combined (``rmd_ray.core.rank_label_issues``): fit the Gaussians on the noisy labels
  (shrinkage ridge, the CLI default), score, rank. One fit serves all three. Its one solve uses a float32
  factor refined to float64 accuracy (docs/design.md 1.14); the same rankings from the float64 statistics
  (``DifficultyScorer.fit``, what ``rmd-ray score`` merges across shards) are timed too, with their agreement.
- the peers (benchmarks/_label_peers.py): cleanlab self-confidence on 5-fold out-of-fold logistic
  regressions (sklearn's default on raw features; standardised with C = 0.01; standardised with C chosen by
  LogisticRegressionCV on the noisy labels; standardised with the oracle C = 0.001, reported but not a
  peer of the verdict), with ``cleanlab.filter.find_label_issues`` flags; cleanlab's training-free
  ``Datalab`` label check (a kNN classifier on the features); a SimiFeat-style vote of the 10 cosine
  nearest neighbours.
- the candidates of issue 26 item 2 (benchmarks/_label_candidates.py): other shrinkage, per-class
  covariances, rank averages with the kNN vote. Measured only: the library default stays ``combined``.

Every computation runs with one BLAS thread (threadpoolctl), on a 2-core machine shared with other
work (docs/design.md section 6). Wall time is the best of 3 runs for the shared-covariance Gaussian fits
(seconds each) and one run for everything else; CPU time (process time, one thread) is reported beside it,
as it barely depends on the other load. The kNN neighbours do not depend on the labels: they are searched
once per feature set and that time is added to every kNN-based row. A last line times RMD and cleanlab's
default model again with the libraries' default threading (every core), what a user who sets nothing gets.

Run: python benchmarks/label_noise.py [--n 10000] [--human-n 50000] [--image-size 64]
(needs the benchmark extra: pip install -e '.[benchmark]')
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _label_candidates as candidates  # noqa: E402
import _label_peers as peers  # noqa: E402
from _common import DATA_ROOT, flip_asymmetric, flip_symmetric, write_result  # noqa: E402
from _label_report import report  # noqa: E402

DATA = DATA_ROOT
SHARED = DATA / "cifar10" / "train.parquet"
HUMAN_LABELS = DATA / "cifar10n" / "labels.parquet"
HUMAN = ("random_label1", "aggre_label")  # CIFAR-10N columns, each used when the labels file has it
DEFAULT = "combined"  # rmd_ray.core.label_ranking.DEFAULT_LABEL_SCORE, chosen from this benchmark
SYNTHETIC = (("symmetric", 0.1), ("symmetric", 0.2), ("asymmetric", 0.2), ("asymmetric", 0.4))


@dataclass
class Ranking:
    """One ranking of one setting: suspicion (larger = more suspect) and what it cost."""

    score: np.ndarray
    wall: float
    cpu: float
    group: str  # "ours" (the library's rankings), "peer", "oracle" (a peer no user can build), "candidate"
    flags: np.ndarray | None = None  # cleanlab's boolean label-issue flags, where it gives them
    note: str = ""


@dataclass
class Setting:
    title: str
    short: str
    features: np.ndarray
    noisy: np.ndarray
    flipped: np.ndarray
    human: bool  # real (CIFAR-10N) labels: the verdict asks for AP there too
    rankings: dict[str, Ranking] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # the clean labels; the float64-statistics and all-cores timings


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


def subset(n_total: int, n: int, seed: int) -> np.ndarray:
    """The seeded subset of table rows (all rows when n >= n_total, none when n = 0), sorted."""
    if n == 0:
        return np.arange(0)
    if n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n, replace=False))


def load_features(table, rows: np.ndarray, cache: Path, image_size: int) -> tuple[np.ndarray, float]:
    """Features of table rows ``rows`` (sorted), from the cache when it holds them (matched by id), else
    embedded and cached (with their ids); and the embedding seconds of the cached run."""
    ids = np.asarray(table.column("id").to_pylist())
    if cache.is_file():
        saved = np.load(cache)
        if int(saved["image_size"]) != image_size:
            sys.exit(f"{cache} holds {int(saved['image_size'])} px features, not {image_size}: pass --features-cache")
        where = {name: i for i, name in enumerate(saved["ids"])}
        missing = [name for name in ids[rows] if name not in where]
        if not missing:
            return saved["features"][[where[name] for name in ids[rows]]], float(saved["seconds"])
        print(f"{cache} lacks {len(missing):,} of the {len(rows):,} images: embedding them all again", flush=True)
    start = time.perf_counter()
    features = embed(table.take(rows), image_size=image_size)
    seconds = time.perf_counter() - start
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, features=features, ids=ids[rows], seconds=seconds, image_size=image_size)
    return features, seconds


def human_labels(table) -> dict[str, np.ndarray]:
    """The CIFAR-10N label columns in ``HUMAN`` present in the labels file, in the table's row order."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    human = pq.read_table(HUMAN_LABELS)
    order = pc.index_in(table.column("id"), value_set=human.column("id")).to_numpy(zero_copy_only=False)
    if np.any(order < 0):
        sys.exit(f"a CIFAR-10 id has no CIFAR-10N label: check {HUMAN_LABELS}")
    if not np.array_equal(human.column("clean_label").to_numpy()[order], table.column("label").to_numpy()):
        sys.exit(f"CIFAR-10N's clean_label disagrees with {SHARED}")
    return {name: human.column(name).to_numpy()[order].astype(np.int64)
            for name in HUMAN if name in human.column_names}


def build_settings(args) -> tuple[list[Setting], str]:
    """The synthetic settings on the --n subset and the CIFAR-10N ones on the --human-n subset; and a
    sentence on the features for the report."""
    from rmd_ray.data.readers import read_parquet_images

    table = read_parquet_images(SHARED)
    clean_all = table.column("label").to_numpy().astype(np.int64)
    wanted = {"all": (args.n, args.human_n), "synthetic": (args.n, 0), "human": (0, args.human_n)}[args.settings]
    synthetic_rows, human_rows = (subset(table.num_rows, n, args.seed) for n in wanted)
    rows = np.union1d(synthetic_rows, human_rows)
    features_all, embed_s = load_features(table, rows, Path(args.features_cache), args.image_size)
    settings = []
    features = features_all[np.searchsorted(rows, synthetic_rows)]
    clean = clean_all[synthetic_rows]
    for kind, rate in SYNTHETIC if len(synthetic_rows) else ():
        if kind == "symmetric":
            noisy = flip_symmetric(clean, rate=rate, n_classes=10, seed=args.seed)
        else:
            noisy = flip_asymmetric(clean, rate=rate, seed=args.seed)
        flipped = noisy != clean
        settings.append(Setting(f"{kind} {rate:.0%} ({int(flipped.sum()):,} flipped)", f"{kind} {rate:.0%}",
                                features, noisy, flipped, human=False, extra={"clean": clean}))
    features = features_all[np.searchsorted(rows, human_rows)]
    clean = clean_all[human_rows]
    human = human_labels(table)
    for name, labels in human.items() if len(human_rows) else ():
        noisy = labels[human_rows]
        flipped = noisy != clean
        settings.append(Setting(f"CIFAR-10N {name}, {len(noisy):,} images ({flipped.mean():.1%} wrong)",
                                f"CIFAR-10N {name}", features, noisy, flipped, human=True, extra={"clean": clean}))
    absent = [name for name in HUMAN if name not in human]
    note = (f"CIFAR-10 train, efficientnet_lite0 at {args.image_size} px; synthetic settings on {len(synthetic_rows):,}"
            f" images (seed {args.seed}), CIFAR-10N on {len(human_rows):,}; {len(rows):,} images embedded once in "
            f"{embed_s:.0f} s (not in the times below)"
            + (f"; not in cifar10n/labels.parquet, so not run: {', '.join(absent)}" if absent else ""))
    return settings, note


def default_rankings(features: np.ndarray, noisy: np.ndarray) -> dict[str, np.ndarray]:
    """The three rankings from one Gaussian fit (rmd_ray.core.rank_label_issues, shrinkage ridge, the CLI
    default). The one solve Sigma^-1 (m - mu_0) comes from a float32 factor refined to float64 accuracy
    (docs/design.md 1.14); RMD and the margin from the discriminant shortcut (docs/design.md 1.13), O(N d K)."""
    from rmd_ray.core import rank_label_issues
    from rmd_ray.core.label_ranking import label_issue_scores

    ranking = rank_label_issues(features, noisy, n_classes=10, score=DEFAULT)
    if ranking.solver != "refined":
        sys.exit(f"rank_label_issues fell back to float64 on the benchmark features: {ranking.solver_note}")
    return {name: label_issue_scores(ranking.rmd, ranking.margin, score=name) for name in ("rmd", "margin", "combined")}


def float64_statistics_rankings(features: np.ndarray, noisy: np.ndarray) -> dict[str, np.ndarray]:
    """The same rankings from the float64 statistics (DifficultyScorer.fit: the float64 scatter that
    `rmd-ray score` merges across shards), for the time and agreement lines."""
    from rmd_ray.core import CovarianceConfig, DifficultyScorer
    from rmd_ray.core.label_ranking import label_issue_scores

    scorer = DifficultyScorer(n_classes=10, covariance=CovarianceConfig(shrinkage="ridge")).fit(features, noisy)
    rmd, margin, _ = scorer.label_scores(features, noisy)
    return {name: label_issue_scores(rmd, margin, score=name) for name in ("rmd", "margin", "combined")}


def rank_ours(s: Setting) -> None:
    """The default fit's three rankings, and the float64-statistics path's time and agreement."""
    ours, wall, cpu = candidates.timed(lambda: default_rankings(s.features, s.noisy), repeat=3)
    for name, score in ours.items():
        s.rankings[name] = Ranking(score, wall, cpu, "ours")
    exact, exact_s, _ = candidates.timed(lambda: float64_statistics_rankings(s.features, s.noisy), repeat=3)
    s.extra["statistics"] = (wall, exact_s, max(
        float(np.abs(ours[n] - exact[n]).max() / np.abs(exact[n]).max()) for n in ("rmd", "margin")
    ), bool((ours["combined"] == exact["combined"]).all()))


def rank_peers(s: Setting, neighbours: tuple[np.ndarray, float, float], seed: int) -> None:
    """The cleanlab pipelines and the kNN vote (benchmarks/_label_peers.py)."""
    for name, (_, realistic) in peers.LOGISTIC_MODELS.items():
        (score, flags, note), wall, cpu = candidates.timed(lambda name=name: peers.cleanlab_logistic(
            s.features, s.noisy, name, seed))
        s.rankings[f"cleanlab, {name}"] = Ranking(score, wall, cpu, "peer" if realistic else "oracle", flags, note)
    (score, flags), wall, cpu = candidates.timed(lambda: peers.cleanlab_datalab(s.features, s.noisy))
    s.rankings["cleanlab Datalab (kNN, no training)"] = Ranking(score, wall, cpu, "peer", flags=flags)
    nn, nn_wall, nn_cpu = neighbours
    vote, wall, cpu = candidates.timed(lambda: peers.knn_vote(nn, s.noisy))
    s.rankings["kNN vote (10 cosine neighbours)"] = Ranking(vote, nn_wall + wall, nn_cpu + cpu, "peer",
                                                             note=f"neighbour search {nn_wall:.1f} s")


def rank_candidates(s: Setting) -> None:
    """Issue 26 item 2: other shrinkage, per-class covariances, rank averages with kNN votes."""
    from rmd_ray.core.label_ranking import rank_average

    for shrinkage in list(candidates.SHRINKAGES)[1:]:
        scores, wall, cpu = candidates.timed(
            lambda shrinkage=shrinkage: candidates.gaussian_scores(s.features, s.noisy, shrinkage), repeat=3)
        for name, score in scores.items():
            s.rankings[f"{name}, {shrinkage}"] = Ranking(score, wall, cpu, "candidate")
    scores, wall, cpu = candidates.timed(lambda: candidates.per_class_scores(s.features, s.noisy))
    for name, score in scores.items():
        s.rankings[f"{name}, per-class Ledoit-Wolf covariances"] = Ranking(score, wall, cpu, "candidate")
    gaussian = {name: s.rankings[name] for name in ("rmd", "margin", "combined")}
    vote = s.rankings["kNN vote (10 cosine neighbours)"]
    combos, wall, cpu = candidates.timed(
        lambda: candidates.combinations({k: r.score for k, r in gaussian.items()}, vote.score))
    for name, score in combos.items():
        s.rankings[name] = Ranking(score, gaussian["combined"].wall + vote.wall + wall,
                                   gaussian["combined"].cpu + vote.cpu + cpu, "candidate")
    near, wall, cpu = candidates.timed(lambda: candidates.discriminant_neighbours(
        candidates.discriminant_coordinates(s.features, s.noisy)))
    vote = peers.knn_vote(near, s.noisy)
    s.rankings["kNN vote in the discriminant coordinates"] = Ranking(vote, wall, cpu, "candidate")
    s.rankings["rank-average(combined, discriminant kNN vote)"] = Ranking(
        rank_average(gaussian["combined"].score, vote), gaussian["combined"].wall + wall,
        gaussian["combined"].cpu + cpu, "candidate")


def time_all_cores(s: Setting, seed: int) -> None:
    """The default rankings and cleanlab's default model with the libraries' default threading."""
    _, ours, _ = candidates.timed(lambda: default_rankings(s.features, s.noisy), repeat=3)
    _, peer, _ = candidates.timed(lambda: peers.cleanlab_logistic(
        s.features, s.noisy, next(iter(peers.LOGISTIC_MODELS)), seed))
    s.extra["all_cores"] = (ours, peer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="seeded subset of the 50,000 images (synthetic noise)")
    parser.add_argument("--human-n", type=int, default=50_000, help="seeded subset for the CIFAR-10N settings")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--features-cache", default="runs/label_noise/cifar10_64.npz",
                        help="features + ids saved here after embedding, reused when they cover the images")
    parser.add_argument("--settings", choices=("all", "synthetic", "human"), default="all",
                        help="run only the synthetic or only the CIFAR-10N settings")
    parser.add_argument("--result", default="label_noise.md", help="file name under benchmarks/results/")
    args = parser.parse_args()
    for path in (SHARED, HUMAN_LABELS):
        if not path.is_file():
            sys.exit(f"skipped: {path} not found (the CIFAR-10 data: set RMD_RAY_DATA, docs/benchmarks.md \"Data\")")
    from rmd_ray.core.label_ranking import DEFAULT_LABEL_SCORE

    if DEFAULT_LABEL_SCORE != DEFAULT:
        sys.exit(f"the benchmark marks {DEFAULT!r} but the package default is {DEFAULT_LABEL_SCORE!r}")
    settings, features_note = build_settings(args)
    peers.import_all()

    import warnings

    from threadpoolctl import threadpool_limits

    warnings.filterwarnings("ignore", message="lbfgs failed to converge")  # the raw-feature default, as shipped
    neighbours = {}
    for s in settings:
        with threadpool_limits(1):
            key = id(s.features)
            if key not in neighbours:
                neighbours[key] = candidates.timed(lambda s=s: peers.cosine_neighbours(s.features))
            rank_ours(s)
            rank_peers(s, neighbours[key], args.seed)
            rank_candidates(s)
        time_all_cores(s, args.seed)
        print(f"done: {s.title}", flush=True)
    text = report(settings, features_note=features_note, default=DEFAULT)
    print(text)
    print("written to", write_result(args.result, text))


if __name__ == "__main__":
    main()
