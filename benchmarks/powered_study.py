"""Does per-sample difficulty matter? A powered, resumable study where the paper's mechanism can act.

The regime (docs/benchmarks.md, "powered study"): the network *memorises* noisy labels, so an
entropy bonus on the hard / mislabelled samples has something to stop.

- Data: CIFAR-10 at its native 32 px. 550 training images a class drawn with a seeded generator
  (seed 0) from the 5,000 of each class; the first 500 of each class's draw train, the last 50
  validate (stratified by construction). The full 10,000-image test set.
- Noise settings: ``symmetric_20`` (20% of train + val labels flipped uniformly to another class,
  seed 0), ``cifar10n_random1`` (CIFAR-10N's ``random_label1``: one real annotator's labels, joined
  by id), ``clean``. Validation carries the same noise as training (as a user's would).
- Model: ResNet-18 width 1/4 (CIFAR stem), SGD 0.05 cosine, wd 5e-4, batch 128, *no augmentation*
  (with crop + flip the network does not memorise within a CPU budget: the pilot in
  docs/benchmarks.md), ``--epochs`` epochs, one torch thread per run.
- Difficulty: EfficientNet-Lite0 features at 64 px; one Gaussian fit (ridge shrinkage, the CLI's
  default) on the noisy training labels; test images scored with their labels under the training
  Gaussians for the RMD quintiles.
- Arms at matched strength: every entropy-bonus arm gets alpha = m / mean(s), so its mean entropy
  coefficient alpha * mean(s) equals m. ``proposed`` (RMD, min-max), ``shuffled_rmd`` (the same
  weights permuted, seed = the run's seed), ``uniform`` (every sample the mean weight: ER with
  beta = m), ``md``, ``rank`` and ``robust`` (RMD with the rank / 5-95% percentile normalisation).
  m* is chosen for ``proposed`` on validation NLL over ``STRENGTHS`` (seed 0); every other arm runs
  at m*. ``er_tuned``: ER with beta chosen on validation NLL over the same grid (the ``uniform`` arm
  at each m). ``ce``. Post-hoc temperature scaling fitted on validation is applied to every run.
- Pairing: seed k gives every arm the same initialisation and batch order.

Each finished run writes ``benchmarks/results/powered_study/runs/<setting>/<arm>_m<m>_seed<k>.json``
(atomically; ``--commit`` also commits it), and a rerun skips recorded runs, so the study spans
sessions. Several processes may run at once: each claims its run with an exclusive file. Then
``summarise`` writes ``powered_study.md``, ``powered_study.json`` and the README's verdict table.

Run:  python benchmarks/powered_study.py run [--max-runs N] [--commit]    (one process per core)
      python benchmarks/powered_study.py contrast     (the weight-contrast table; no training)
      python benchmarks/powered_study.py summarise
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA_ROOT, RESULTS, flip_symmetric  # noqa: E402

STUDY = RESULTS / "powered_study"
SETTINGS = ("symmetric_20", "cifar10n_random1", "clean")
STRENGTHS = (0.1, 0.25, 0.5, 1.0, 2.0)  # mean entropy coefficient alpha * mean(s); 2.0 added when 1.0 won
#: arm -> (difficulty source, normalisation); ``ce`` has no bonus
ARMS = {
    "proposed": ("rmd", "minmax"),
    "shuffled_rmd": ("shuffled_rmd", "minmax"),
    "uniform": ("uniform", "minmax"),
    "md": ("md", "minmax"),
    "rank": ("rmd", "rank"),
    "robust": ("rmd", "robust"),
}
PER_CLASS, VAL_PER_CLASS = 500, 50


# ------------------------------------------------------------------------------------------------ data


def _decode(table) -> np.ndarray:
    from rmd_ray.data.decode import decode_image

    return np.stack([np.asarray(decode_image(r)) for r in table.select(["id", "label", "image"]).to_pylist()])


def prepare(cache: Path) -> dict:
    """Images, labels and features of the study, computed once and cached in ``cache`` (npz)."""
    import fcntl

    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process prepares; the others wait and read
        if not cache.exists():
            _prepare(cache)
    return dict(np.load(cache))


def _prepare(cache: Path) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from label_noise import embed

    train = pq.read_table(DATA_ROOT / "cifar10" / "train.parquet")
    labels = train.column("label").to_numpy().astype(np.int64)
    rng = np.random.default_rng(0)
    draws = [rng.choice(np.flatnonzero(labels == k), PER_CLASS + VAL_PER_CLASS, replace=False) for k in range(10)]
    train_idx = np.sort(np.concatenate([d[:PER_CLASS] for d in draws]))
    val_idx = np.sort(np.concatenate([d[PER_CLASS:] for d in draws]))
    pool = train.take(np.concatenate([train_idx, val_idx]))
    test = pq.read_table(DATA_ROOT / "cifar10" / "test.parquet")
    human = pq.read_table(DATA_ROOT / "cifar10n" / "labels.parquet")
    order = pc.index_in(pool.column("id"), value_set=human.column("id")).to_numpy(zero_copy_only=False)
    if np.any(order < 0):
        raise ValueError(f"a CIFAR-10 id has no CIFAR-10N label: check {DATA_ROOT / 'cifar10n' / 'labels.parquet'}")
    clean = pool.column("label").to_numpy().astype(np.int64)
    assert np.array_equal(human.column("clean_label").to_numpy()[order], clean)
    start = time.perf_counter()
    features_pool = embed(pool, image_size=64)
    features_test = embed(test, image_size=64)
    n_train = train_idx.size
    np.savez(
        cache.with_suffix(".tmp.npz"),
        ids=np.asarray(pool.column("id").to_pylist()), x_pool=_decode(pool), x_test=_decode(test),
        y_clean=clean, y_test=test.column("label").to_numpy().astype(np.int64),
        y_cifar10n_random1=human.column("random_label1").to_numpy()[order].astype(np.int64),
        y_symmetric_20=flip_symmetric(clean, rate=0.2, n_classes=10, seed=0),
        f_pool=features_pool, f_test=features_test, n_train=np.int64(n_train),
        embed_s=np.float64(time.perf_counter() - start),
    )
    os.replace(cache.with_suffix(".tmp.npz"), cache)


class Setting:
    """One noise setting: its labels, the Gaussians fitted on them and the difficulty columns."""

    def __init__(self, data: dict, name: str):
        from rmd_ray.core import CovarianceConfig, DifficultyScorer

        n = int(data["n_train"])
        noisy = data[f"y_{name}"] if name != "clean" else data["y_clean"]
        self.name = name
        self.x_train, self.x_val, self.x_test = data["x_pool"][:n], data["x_pool"][n:], data["x_test"]
        self.y_train, self.y_val, self.y_test = noisy[:n], noisy[n:], data["y_test"]
        self.mislabelled = noisy[:n] != data["y_clean"][:n]
        scorer = DifficultyScorer(n_classes=10, covariance=CovarianceConfig(shrinkage="ridge"))
        scorer.fit(data["f_pool"][:n], self.y_train)
        md, rmd = scorer.score(data["f_pool"][:n], self.y_train)
        self.columns = {"rmd": rmd, "md": md}
        self.test_rmd = scorer.score(data["f_test"], self.y_test)[1]

    def weights(self, arm: str, seed: int) -> np.ndarray:
        from rmd_ray.core import WeightConfig
        from rmd_ray.core.difficulty import weights_from_columns

        source, normalization = ARMS[arm]
        config = WeightConfig(normalization=normalization)
        return np.asarray(weights_from_columns(self.columns, source=source, config=config, seed=seed))


# ------------------------------------------------------------------------------------------------ runs


def run_name(arm: str, m: float, seed: int) -> str:
    if arm == "oof":
        return f"oof_fold{seed}"
    return f"{arm}_m{m:g}_seed{seed}" if arm != "ce" else f"ce_seed{seed}"


def record_path(setting: str, name: str) -> Path:
    return STUDY / "runs" / setting / f"{name}.json"


def load_records() -> dict[tuple[str, str], dict]:
    out = {}
    for path in sorted((STUDY / "runs").glob("*/*.json")):
        out[(path.parent.name, path.stem)] = json.loads(path.read_text())
    return out


def chosen_strength(records, setting: str, arm: str) -> float | None:
    """The m of ``STRENGTHS`` with the lowest validation NLL at seed 0, once every value has run."""
    rows = [records.get((setting, run_name(arm, m, 0))) for m in STRENGTHS]
    if any(r is None for r in rows):
        return None
    return min(zip(STRENGTHS, rows), key=lambda mr: mr[1]["val"]["nll"])[0]


def schedule(records, *, settings, seeds: int) -> list[tuple[str, str, float, int]]:
    """Every run of the study in priority order: (setting, arm, m, seed). Runs whose strength is not
    chosen yet are left out until their tuning runs have finished."""
    runs = []
    for s in settings:  # tiers: tuning, the three arms the verdict rests on + CE, ER, ablations
        runs += [(s, "ce", 0.0, 0)] + [(s, "proposed", m, 0) for m in STRENGTHS]
    chosen = {s: chosen_strength(records, s, "proposed") for s in settings}
    for s in settings:  # setting-major in --settings order: the acceptance interval is on the first
        if chosen[s] is not None:
            runs += [(s, arm, chosen[s], k) for k in range(seeds) for arm in ("proposed", "shuffled_rmd", "uniform")]
            runs += [(s, "ce", 0.0, k) for k in range(seeds)]  # CE after: the acceptance pairs the three arms
    for s in settings:
        runs += [(s, "uniform", m, 0) for m in STRENGTHS]
        m_er = chosen_strength(records, s, "uniform")
        if m_er is not None:
            runs += [(s, "uniform", m_er, k) for k in range(seeds)]
    for s in settings:
        m = chosen_strength(records, s, "proposed")
        if m is not None:
            runs += [(s, arm, m, k) for k in range(seeds) for arm in ("md", "rank", "robust")]
    for s in settings:  # out-of-fold CE losses (two folds) for Spearman(RMD, loss)
        runs += [(s, "oof", 0.0, fold) for fold in (0, 1)]
    return list(dict.fromkeys(runs))


def claim(claims: Path, setting: str, name: str) -> Path | None:
    """An exclusive claim file for one run in ``claims``, or None when a live process holds it."""
    path = claims / f"{setting}__{name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(path.read_text() or 0), 0)
                return None  # held by a live process
            except (ProcessLookupError, ValueError):
                path.unlink(missing_ok=True)  # left by a killed process
                continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return path
    return None


def train_run(setting: Setting, arm: str, m: float, seed: int, *, epochs: int, width: float) -> dict:
    """Train one arm, predict train / val / test, and return its record."""
    import torch
    from _inprocess import logits_of, normaliser, train_model

    from rmd_ray.core.metrics import apply_temperature, evaluate_predictions, fit_temperature, softmax

    to_tensor = normaliser(setting.x_train)
    if arm == "ce":
        weights, loss, hparams = np.ones(len(setting.y_train)), "ce", {}
    else:
        weights = setting.weights(arm, seed)
        loss, hparams = "proposed", {"alpha": m / float(weights.mean())}
    curve = []

    def after_epoch(epoch, model):
        if seed == 0 and epoch % 5 == 0 and epoch < epochs:  # the memorisation curve, seed 0 only
            curve.append([epoch, float((logits_of(model, setting.x_train, to_tensor).argmax(1) == setting.y_train)
                                       .mean())])
            model.train()

    tic = time.perf_counter()
    model = train_model(setting.x_train, setting.y_train, weights, loss=loss, hparams=hparams, epochs=epochs,
                        seed=seed, width=width, to_tensor=to_tensor, augment=False, channels_last=True,
                        after_epoch=after_epoch)
    train_s = time.perf_counter() - tic
    z_train, z_val, z_test = (logits_of(model, x, to_tensor) for x in (setting.x_train, setting.x_val,
                                                                         setting.x_test))
    p_train = softmax(z_train)
    given = p_train[np.arange(len(setting.y_train)), setting.y_train]
    mis = setting.mislabelled
    temperature = fit_temperature(z_val, setting.y_val)
    test = evaluate_predictions(z_test, setting.y_test)
    scaled = evaluate_predictions(apply_temperature(z_test, temperature), setting.y_test)
    edges = np.quantile(setting.test_rmd, [0.2, 0.4, 0.6, 0.8])
    quintile = np.digitize(setting.test_rmd, edges)  # 0 easiest .. 4 hardest
    val = evaluate_predictions(z_val, setting.y_val)
    keep = ("acc", "ece_mass", "ece_width", "nll", "brier", "aurc")
    return {
        "setting": setting.name, "arm": arm, "m": m, "seed": seed, "epochs": epochs, "width": width,
        "alpha": hparams.get("alpha", 0.0), "mean_weight": float(weights.mean()), "train_s": train_s,
        "torch_threads": torch.get_num_threads(),
        "train": {"acc_noisy": float((z_train.argmax(1) == setting.y_train).mean()),
                  "memorised_mislabelled": float((z_train.argmax(1) == setting.y_train)[mis].mean()) if mis.any()
                  else None,
                  "conf_given_mislabelled": float(given[mis].mean()) if mis.any() else None,
                  "conf_given_clean": float(given[~mis].mean()), "curve": curve},
        "val": {k: float(val[k]) for k in ("acc", "ece_mass", "nll")},
        "test": {k: float(test[k]) for k in keep},
        "test_ts": {"temperature": temperature, **{k: float(scaled[k]) for k in keep}},
        "test_ece_by_rmd_quintile": [
            evaluate_predictions(z_test[quintile == q], setting.y_test[quintile == q])["ece_mass"] for q in range(5)
        ],
    }


def oof_run(setting: Setting, *, fold: int, epochs: int, width: float) -> dict:
    """CE trained on the other fold (stratified, seed 0); the held-out samples' losses by position."""
    from _inprocess import logits_of, normaliser, train_model
    from scipy.special import logsumexp

    from rmd_ray.core.splits import stratified_folds

    folds = stratified_folds(setting.y_train, folds=2, seed=0)
    train_idx, held = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    to_tensor = normaliser(setting.x_train)
    tic = time.perf_counter()
    model = train_model(setting.x_train[train_idx], setting.y_train[train_idx], np.ones(train_idx.size), loss="ce",
                        hparams={}, epochs=epochs, seed=0, width=width, to_tensor=to_tensor, augment=False,
                        channels_last=True)
    z = logits_of(model, setting.x_train[held], to_tensor)
    loss = logsumexp(z, axis=1) - z[np.arange(held.size), setting.y_train[held]]
    return {"setting": setting.name, "arm": "oof", "m": 0.0, "seed": fold, "epochs": epochs, "width": width,
            "train_s": time.perf_counter() - tic, "held": held.tolist(), "loss": [round(float(v), 6) for v in loss]}


def weight_contrast(data: dict, settings: list[str]) -> list[dict]:
    """For every weighting: mean s, mean s(mislabelled) / mean s(clean), and the share of the total bonus
    alpha * s that lands on mislabelled samples (alpha cancels); Spearman(RMD, out-of-fold loss) where the
    two out-of-fold runs are recorded."""
    from scipy.stats import spearmanr

    records = load_records()
    weightings = [("proposed", "rmd / minmax"), ("md", "md / minmax"), ("rank", "rmd / rank"),
                  ("robust", "rmd / robust"), ("shuffled_rmd", "shuffled rmd / minmax"), ("uniform", "uniform")]
    rows = []
    for name in settings:
        setting = Setting(data, name)
        mis = setting.mislabelled
        if not mis.any():
            continue
        oof = [records.get((name, f"oof_fold{f}")) for f in (0, 1)]
        spearman = None
        if all(oof):
            loss = np.empty(len(setting.y_train))
            for r in oof:
                loss[np.asarray(r["held"])] = r["loss"]
            spearman = float(spearmanr(setting.columns["rmd"], loss).statistic)
        for arm, label in weightings:
            s = setting.weights(arm, 0)
            rows.append({"setting": name, "weighting": label, "mean": float(s.mean()),
                         "contrast": float(s[mis].mean() / s[~mis].mean()),
                         "bonus_share": float(s[mis].sum() / s.sum()), "mislabelled_share": float(mis.mean()),
                         "spearman_oof": spearman if arm == "proposed" else None})
    return rows


def write_record(path: Path, record: dict, *, commit: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)
    if commit:  # only this file: work staged by others in the tree is left alone
        repo = STUDY.parents[2]
        for _ in range(10):
            add = subprocess.run(["git", "-C", str(repo), "add", str(path)], capture_output=True)
            done = add.returncode == 0 and subprocess.run(
                ["git", "-C", str(repo), "commit", "-q", "-m", f"powered_study: {record['setting']} {path.stem}",
                 "--", str(path)], capture_output=True).returncode == 0
            if done:
                return
            time.sleep(5)  # another git command holds the index lock
        print(f"  could not commit {path}; commit it by hand", flush=True)


def run(args) -> None:
    import torch

    global STUDY
    STUDY = Path(args.study_dir)
    torch.set_num_threads(args.threads)
    data = prepare(Path(args.cache))
    settings = {}
    done = 0
    while args.max_runs is None or done < args.max_runs:
        records = load_records()
        pending = [r for r in schedule(records, settings=args.settings, seeds=args.seeds)
                   if (r[0], run_name(r[1], r[2], r[3])) not in records]
        started = None
        for s, arm, m, seed in pending:
            name = run_name(arm, m, seed)
            held = claim(Path(args.cache).parent / "claims", s, name)
            if held is not None:
                started = (s, arm, m, seed, name, held)
                break
        if started is None:
            print("nothing left to run (or every pending run is claimed)", flush=True)
            return
        s, arm, m, seed, name, held = started
        try:
            if s not in settings:
                settings[s] = Setting(data, s)
            print(f"[{s}] {name} ...", flush=True)
            if arm == "oof":
                record = oof_run(settings[s], fold=seed, epochs=args.epochs, width=args.width)
            else:
                record = train_run(settings[s], arm, m, seed, epochs=args.epochs, width=args.width)
            write_record(record_path(s, name), record, commit=args.commit)
            if arm != "oof":
                print(f"[{s}] {name}: {record['train_s']:.0f} s, train acc {record['train']['acc_noisy']:.3f}, "
                      f"test acc {record['test']['acc']:.4f}, ECE {100 * record['test']['ece_mass']:.2f}, "
                      f"val nll {record['val']['nll']:.3f}", flush=True)
        finally:
            held.unlink(missing_ok=True)
        done += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run pending runs in priority order (resumable; one process per core)")
    r.add_argument("--settings", nargs="+", default=list(SETTINGS[:2]), choices=SETTINGS)
    r.add_argument("--seeds", type=int, default=10)
    r.add_argument("--epochs", type=int, default=16)
    r.add_argument("--width", type=float, default=0.25)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--max-runs", type=int, default=None)
    r.add_argument("--commit", action="store_true", help="git-commit each record as it is written")
    r.add_argument("--cache", default="/tmp/powered_study/data.npz", help="data cache; claims beside it")
    r.add_argument("--study-dir", default=str(STUDY), help="where the run records go (a checkout's results)")
    c = sub.add_parser("contrast", help="the weight-contrast table (weight_contrast.json) from the data cache")
    c.add_argument("--cache", default="/tmp/powered_study/data.npz")
    c.add_argument("--settings", nargs="+", default=list(SETTINGS[:2]), choices=SETTINGS)
    s = sub.add_parser("summarise", help="tables, powered_study.json and the README verdict from the records")
    s.add_argument("--readme", default=str(Path(__file__).resolve().parents[1] / "README.md"))
    args = parser.parse_args()
    if args.command == "run":
        run(args)
    elif args.command == "contrast":
        rows = weight_contrast(prepare(Path(args.cache)), args.settings)
        path = STUDY / "weight_contrast.json"
        path.write_text(json.dumps(rows, indent=1) + "\n")
        for row in rows:
            print(row)
    else:
        from powered_summary import summarise

        summarise(load_records(), readme=Path(args.readme))


if __name__ == "__main__":
    main()
