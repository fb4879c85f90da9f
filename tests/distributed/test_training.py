"""Ray Train training: learning, CE equivalence, resume after a killed worker, clear errors for bad input.

The four tests that fit (marked ``slow``; deselect with ``-m "not slow"``) use the shared local Ray
(``ray_local``, 3 logical CPUs), a width-0.125 ResNet-18 with the CIFAR stem, 16x16 images whose class
is encoded in their colour, and workers with half a CPU each.
"""

from __future__ import annotations

import io
import math
import os
import sys
import time

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from rmd_ray import __version__
from rmd_ray.core.metrics import row_summaries
from rmd_ray.data.readers import from_arrays
from rmd_ray.distributed.training import (
    CHECKPOINT_FILE,
    TrainConfig,
    join_weights,
    loss_needs_weights,
    run_training,
)
from rmd_ray.evaluation.shift import decode_split
from rmd_ray.io.parts import read_table
from rmd_ray.io.parts import read_table_metadata as read_metadata
from rmd_ray.nn import engine
from rmd_ray.nn.engine import NonFiniteLossError, OptimConfig
from rmd_ray.nn.models import build_model

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

K = 4
COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30]])


def colour_table(n: int, seed: int, *, flip: float = 0.1) -> pa.Table:
    """16x16 RGB images: class colour * 0.6 plus uniform noise; ``flip`` of the labels are random."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, n)
    images = rng.integers(0, 90, (n, 16, 16, 3)) + 0.6 * COLOURS[labels][:, None, None, :]
    noisy = rng.random(n) < flip
    labels = np.where(noisy, rng.integers(0, K, n), labels)  # keeps accuracy < 1 (no single-class metrics)
    return from_arrays(
        np.clip(images, 0, 255).astype(np.uint8),
        labels,
        ids=[f"s{seed}_{i:03d}" for i in range(n)],
        classes=["red", "green", "blue", "yellow"],
    )


TRAIN, VAL, TEST = colour_table(256, 0), colour_table(128, 1), colour_table(128, 2)
OPTIM = OptimConfig(lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=3)
# seeded shuffling: the CE / proposed(s=0) equivalence below is bit for bit
BASE = dict(width=0.125, optim=OPTIM, batch_size=32, cpus_per_worker=0.5, max_failures=0, shuffle="seeded")


def scores_for(table: pa.Table, weight: float | np.ndarray, *, reverse: bool = True) -> pa.Table:
    ids = table.column("id").to_pylist()
    w = np.broadcast_to(np.asarray(weight, dtype=np.float64), (len(ids),))
    scores = pa.table({"id": ids, "label": table.column("label"), "rmd": np.zeros(len(ids)), "weight": w})
    return scores.take(pa.array(np.arange(len(ids))[::-1])) if reverse else scores  # order must not matter


def _ray_pickles_this_module_by_value():
    # epoch hooks defined here must reach the workers, which cannot import this test module
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class EpochLog:
    """Epoch hook: append each started epoch to a file; optionally kill the worker once at ``crash_at``."""

    def __init__(self, path, *, crash_at: int | None = None, marker=None) -> None:
        self.path, self.crash_at, self.marker = str(path), crash_at, str(marker) if marker else None

    def __call__(self, epoch: int) -> None:
        with open(self.path, "a") as fh:
            fh.write(f"{epoch}\n")
        if epoch == self.crash_at and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            # the controller polls workers every 2 s: let it register the last checkpoint first, so
            # the crash lands mid-epoch rather than racing the previous report
            time.sleep(5)
            os._exit(1)

    def epochs(self) -> list[int]:
        with open(self.path) as fh:
            return [int(line) for line in fh]


@pytest.fixture(scope="module")
def ce_run(ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("ce")
    result = run_training(
        TRAIN,
        val=VAL,
        test=TEST,
        config=TrainConfig(loss="ce", **BASE),
        output_dir=out,
        run_name="ce",
    )
    return result, out


# ------------------------------------------------------------------------------------------- fits


@pytest.mark.slow  # a Ray Train fit: ~20-40 s of start-up alone on 2 shared cores
def test_training_learns_and_predicts_every_test_id_once(ce_run):
    result, out = ce_run
    assert [e["epoch"] for e in result.epochs] == [1, 2, 3]
    assert all(e["resumed_from"] == 0 for e in result.epochs)
    assert result.epochs[-1]["train_loss"] < 0.7 * result.epochs[0]["train_loss"]
    # chance is 0.25; 10% random labels cap the reachable accuracy near 0.93
    assert result.final_val["acc"] >= 0.6
    for key in ("ece_mass", "ece_width", "nll"):
        assert key in result.final_val and math.isfinite(result.final_val[key])
    assert 0 <= result.final_val["ece_mass"] <= 1 and 0 <= result.final_val["ece_width"] <= 1
    assert result.final_val == {k[4:]: v for k, v in result.epochs[-1].items() if k.startswith("val_")}

    assert result.predictions_path == str(out / "ce" / "predictions_test.parquet") == result.predictions["test"]
    pred = read_table(result.predictions_path)  # a parts directory written by the prediction actors
    assert pred.schema.field("logits").type == pa.list_(pa.float32(), K)
    assert set(pred.column("error").to_pylist()) == {""}
    test_ids = TEST.column("id").to_pylist()
    assert sorted(pred.column("id").to_pylist()) == sorted(test_ids)  # every id exactly once
    truth = dict(zip(test_ids, TEST.column("label").to_pylist()))
    assert [truth[i] for i in pred.column("id").to_pylist()] == pred.column("label").to_pylist()
    logits = np.stack(pred.column("logits").to_numpy(zero_copy_only=False))
    assert logits.shape == (128, K) and np.isfinite(logits).all()
    acc = float(np.mean(logits.argmax(1) == pred.column("label").to_numpy()))
    assert acc == pytest.approx(result.test_metrics["acc"], abs=1e-12)
    assert acc >= 0.6
    # the prediction actors' per-row summaries, which evaluation reads instead of the logits
    expected = row_summaries(logits.astype(np.float64), pred.column("label").to_numpy())
    for name, values in expected.items():
        np.testing.assert_array_equal(pred.column(name).to_numpy(), values, err_msg=name)

    meta = read_metadata(result.predictions_path)
    assert (meta["model"], meta["loss"], meta["epochs"], meta["seed"]) == ("resnet18", "ce", 3, 0)
    assert meta["rmd_ray_version"] == __version__ and meta["split"] == "test"
    # the written logits are the last checkpoint's: reload it and predict one image by hand
    model = build_model("resnet18", num_classes=K, cifar_stem=True, width=0.125)
    info = engine.load_checkpoint(os.path.join(result.last_checkpoint, CHECKPOINT_FILE), model=model)
    assert info["epoch"] == 3
    images, _ = decode_split(TEST, preset="cifar", image_size=None)  # (N, H, W, 3)
    ids = TEST.column("id").to_pylist()
    mean, std = np.array(info["extra"]["mean"]), np.array(info["extra"]["std"])
    # the channel statistics come from one streaming pass over the training images
    train_pixels = decode_split(TRAIN, preset="cifar", image_size=None)[0].reshape(-1, 3) / 255.0
    np.testing.assert_allclose(mean, train_pixels.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(std, train_pixels.std(axis=0), rtol=1e-9)
    x = ((images[:2].astype(np.float32) / 255 - mean) / std).transpose(0, 3, 1, 2)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x.astype(np.float32))).numpy()
    row = {i: r for r, i in enumerate(pred.column("id").to_pylist())}
    np.testing.assert_allclose(logits[[row[ids[0]], row[ids[1]]]], expected, rtol=1e-4, atol=1e-4)
    assert os.path.isfile(os.path.join(result.best_checkpoint, CHECKPOINT_FILE))


@pytest.mark.slow  # a Ray Train fit: ~20-40 s of start-up alone on 2 shared cores
def test_killed_worker_resumes_and_proposed_with_zero_weights_equals_ce(ce_run, tmp_path):
    """Two properties from one fit (each fit costs ~20-40 s of Ray start-up here).

    Resume: the hook kills the worker (os._exit) inside epoch 2 on the first attempt only; Ray
    restarts the group, which must continue from the checkpoint written after epoch 2 (2 finished
    epochs), not from 0.

    Equivalence: s = 0 makes the proposed loss exactly cross-entropy (rmd_ray.nn.losses). With the
    same seed, one CPU worker and a fixed block order, model init, shuffling and augmentation are
    the same as in the CE run, and they are seeded per epoch while model, optimiser and schedule
    come back from the checkpoint, so even the resumed run agrees with uninterrupted CE bit for bit.
    """
    _ray_pickles_this_module_by_value()
    ce, _ = ce_run
    hook = EpochLog(tmp_path / "epochs.txt", crash_at=2, marker=tmp_path / "crashed")
    result = run_training(
        TRAIN,
        val=VAL,
        scores=scores_for(TRAIN, 0.0),
        config=TrainConfig(
            loss="proposed", loss_hparams={"alpha": 0.3}, **{**BASE, "max_failures": 1, "eval_every": 2}
        ),
        output_dir=tmp_path,
        run_name="proposed",
        epoch_hook=hook,
    )
    assert (tmp_path / "crashed").exists()
    assert hook.epochs() == [0, 1, 2, 2]  # epoch 2 started, the worker died, epoch 2 again: not 0
    assert [e["epoch"] for e in result.epochs] == [1, 2, 3]
    assert [e["resumed_from"] for e in result.epochs] == [0, 0, 2]
    # eval_every=2: epoch 1 not evaluated (no val keys), epoch 2 evaluated, the last always
    assert ["val_acc" in e for e in result.epochs] == [False, True, True]

    assert [e["train_loss"] for e in result.epochs] == [e["train_loss"] for e in ce.epochs]
    assert result.final_val["nll"] == ce.final_val["nll"]
    assert result.predictions_path == str(tmp_path / "proposed" / "predictions_val.parquet")  # no test split


@pytest.mark.slow  # a Ray Train fit: ~20-40 s of start-up alone on 2 shared cores
def test_two_workers_count_every_validation_and_test_id_once(ray_local, tmp_path):
    # DDP over gloo with 2 x 0.5 CPU: shards of 128 rows, train loss all-reduced over both ranks,
    # validation on both ranks over their parts of the validation shards, deduplicated by index
    # 2 x 32 = 64 samples per step, 4 steps per epoch: a larger lr and one more epoch than 1 worker
    config = TrainConfig(loss="ce", **{**BASE, "num_workers": 2, "optim": OptimConfig(lr=0.1, epochs=3)})
    result = run_training(
        TRAIN, val=VAL, test=TEST, config=config, output_dir=tmp_path, run_name="ddp", shard_rows=48
    )
    assert [e["epoch"] for e in result.epochs] == [1, 2, 3]
    assert all(e["val_n_samples"] == 128 for e in result.epochs)
    # validation ran on both ranks (shards 0, 2 and 1 of 48 + 48 + 32 rows), its summaries reduced: the last
    # epoch's metrics are those of the last checkpoint's predictions of the validation split
    from rmd_ray.evaluation.evaluate import evaluate_run

    predicted = evaluate_run(result.predictions["val"])["metrics"]
    for key in ("acc", "nll", "ece_mass", "brier", "msp_auroc"):
        assert result.final_val[key] == pytest.approx(predicted[key], rel=1e-5, abs=1e-6), key
    assert result.epochs[-1]["train_loss"] < result.epochs[0]["train_loss"]
    assert result.final_val["acc"] >= 0.5
    pred = read_table(result.predictions_path)
    assert sorted(pred.column("id").to_pylist()) == sorted(TEST.column("id").to_pylist())


@pytest.mark.slow  # a Ray Train fit: ~20-40 s of start-up alone on 2 shared cores
def test_nan_loss_names_step_and_sample_ids_and_is_not_retried(ray_local, tmp_path):
    _ray_pickles_this_module_by_value()
    hook = EpochLog(tmp_path / "epochs.txt")
    # lr = 1e30: the first step sends the weights to ~1e30 and the second batch's loss is NaN
    config = TrainConfig(loss="ce", **{**BASE, "optim": OptimConfig(lr=1e30, epochs=2), "max_failures": 1})
    with pytest.raises(
        NonFiniteLossError, match=r"non-finite training loss \(nan\) at step 1; sample ids"
    ) as err:
        run_training(
            TRAIN, val=VAL, config=config, output_dir=tmp_path, run_name="nan", epoch_hook=hook
        )
    assert err.value.step == 1
    assert len(err.value.ids) == 32 and set(err.value.ids) <= set(TRAIN.column("id").to_pylist())
    assert str(err.value.ids[0]) in str(err.value)
    assert hook.epochs() == [0]  # the retry failed at once instead of training again


# ------------------------------------------------------------------------------------- bad input


def test_id_without_weight_is_an_error(ray_local, tmp_path):
    scores = scores_for(TRAIN, 0.5).slice(3)  # reversed order: drops the last 3 ids
    with pytest.raises(ValueError, match=r"3 of 256 training ids have no weight in scores \(e.g. \['s0_253'"):
        run_training(
            TRAIN, val=VAL, scores=scores, config=TrainConfig(**BASE), output_dir=tmp_path, run_name="x"
        )


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan"), float("inf")])
def test_weight_outside_unit_interval_is_an_error(ray_local, tmp_path, bad):
    w = np.full(256, 0.5)
    w[7] = bad
    scores = scores_for(TRAIN, w, reverse=False)
    with pytest.raises(
        ValueError, match=rf"weight of id 's0_007' is {bad!r}; weights must be finite and in \[0, 1\]"
    ):
        run_training(
            TRAIN, val=VAL, scores=scores, config=TrainConfig(**BASE), output_dir=tmp_path, run_name="x"
        )


def test_checkpoint_from_another_model_is_an_error(ray_local, tmp_path):
    other = build_model("resnet18", num_classes=K, cifar_stem=True, width=0.25)
    path = engine.save_checkpoint(
        tmp_path / "other" / CHECKPOINT_FILE, model=other, optimizer=None, scheduler=None, epoch=1
    )
    with pytest.raises(
        ValueError,
        match=r"was saved from model resnet18 \(num_classes=4, width=0.25.*expected "
        r"model is resnet18 \(num_classes=4, width=0.125",
    ):
        run_training(
            TRAIN,
            val=VAL,
            config=TrainConfig(loss="ce", **BASE),
            output_dir=tmp_path,
            run_name="x",
            resume_from=path.parent,
        )  # a folder holding model.pt works too


def test_resume_from_an_unusable_checkpoint_is_an_error(ray_local, tmp_path):
    model = build_model("resnet18", num_classes=K, cifar_stem=True, width=0.125)
    optimizer = engine.build_optimizer(model, OPTIM)
    scheduler = engine.build_scheduler(optimizer, OPTIM, steps_per_epoch=8)
    path = engine.save_checkpoint(
        tmp_path / "done.pt", model=model, optimizer=optimizer, scheduler=scheduler, epoch=3
    )
    with pytest.raises(
        ValueError, match="already finished 3 epochs and optim.epochs is 3; raise optim.epochs"
    ):
        run_training(
            TRAIN,
            val=VAL,
            config=TrainConfig(loss="ce", **BASE),
            output_dir=tmp_path,
            run_name="x",
            resume_from=path,
        )
    path = engine.save_checkpoint(
        tmp_path / "weights.pt", model=model, optimizer=None, scheduler=None, epoch=1
    )
    with pytest.raises(
        ValueError, match="holds no optimizer / scheduler state \\(a weights-only checkpoint\\)"
    ):
        run_training(
            TRAIN,
            val=VAL,
            config=TrainConfig(loss="ce", **BASE),
            output_dir=tmp_path,
            run_name="x",
            resume_from=path,
        )
    with pytest.raises(ValueError, match="is not a checkpoint file or a folder with model.pt"):
        run_training(
            TRAIN,
            val=VAL,
            config=TrainConfig(loss="ce", **BASE),
            output_dir=tmp_path,
            run_name="x",
            resume_from=tmp_path / "missing.pt",
        )


def test_proposed_without_scores_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="loss 'proposed' needs per-sample difficulty weights: pass scores="):
        run_training(TRAIN, val=VAL, config=TrainConfig(**BASE), output_dir=tmp_path, run_name="x")


def test_more_cpus_than_the_cluster_has_is_an_error(ray_local, tmp_path):
    config = TrainConfig(loss="ce", **{**BASE, "num_workers": 4, "cpus_per_worker": 1.0})
    with pytest.raises(ValueError, match=r"4 workers x 1.0 CPUs need 4 CPUs but the Ray cluster has 3"):
        run_training(TRAIN, val=VAL, config=config, output_dir=tmp_path, run_name="x")


def test_crl_num_samples_must_match_the_training_set(tmp_path):
    config = TrainConfig(loss="crl", loss_hparams={"num_samples": 10}, **BASE)
    with pytest.raises(ValueError, match="num_samples=10 but the training table has 256 rows"):
        run_training(TRAIN, val=VAL, config=config, output_dir=tmp_path, run_name="x")


def test_splits_of_different_sizes_are_an_error(ray_local, tmp_path):
    small = from_arrays(np.zeros((4, 8, 8, 3), np.uint8), [0, 1, 2, 3], classes=["red", "green", "blue", "yellow"])
    with pytest.raises(ValueError, match="val images are 8x8 but training images are 16x16; set image_size"):
        run_training(
            TRAIN, val=small, config=TrainConfig(loss="ce", **BASE), output_dir=tmp_path, run_name="x"
        )


def test_duplicate_ids_are_an_error(tmp_path):
    dup = from_arrays(np.zeros((2, 8, 8), np.uint8), [0, 1]).set_column(0, "id", pa.array(["a", "a"]))
    with pytest.raises(ValueError, match="val: ids must be unique"):
        run_training(
            TRAIN, val=dup, config=TrainConfig(loss="ce", **BASE), output_dir=tmp_path, run_name="x"
        )


# ------------------------------------------------------------------------------------ join_weights


def test_join_weights_joins_by_id_not_position():
    ids = ["a", "b", "c"]
    scores = pa.table({"id": ["c", "a", "b", "z"], "weight": [0.3, 0.1, 0.2, 0.9]})
    np.testing.assert_array_equal(join_weights(ids, scores), np.array([0.1, 0.2, 0.3], np.float32))
    assert join_weights(ids, scores).dtype == np.float32


def test_join_weights_errors():
    with pytest.raises(
        ValueError, match=r"2 of 3 training ids have no weight in scores \(e.g. \['b', 'c'\]\)"
    ):
        join_weights(["a", "b", "c"], pa.table({"id": ["a"], "weight": [0.5]}))
    with pytest.raises(ValueError, match="scores has duplicate ids"):
        join_weights(["a"], pa.table({"id": ["a", "a"], "weight": [0.5, 0.6]}))
    with pytest.raises(ValueError, match=r"scores has no column\(s\) \['weight'\]"):
        join_weights(["a"], pa.table({"id": ["a"]}))
    with pytest.raises(ValueError, match="weight of id 'b' is nan"):
        join_weights(["a", "b"], pa.table({"id": ["a", "b"], "weight": pa.array([0.5, None], pa.float64())}))
    with pytest.raises(TypeError, match="scores must be a pyarrow.Table"):
        join_weights(["a"], {"id": ["a"], "weight": [0.5]})


def test_join_weights_refuses_labels_changed_since_scoring():
    scores = pa.table({"id": ["a", "b", "c"], "weight": [0.1, 0.2, 0.3], "label": [0, 1, 2]})
    np.testing.assert_array_equal(join_weights(["c", "a"], scores, labels=[2, 0]), np.array([0.3, 0.1], np.float32))
    with pytest.raises(ValueError, match=r"1 of 3 training rows have a label other than the one they were scored "
                       r"with \(e.g. id 'b': scored 1, now 2\): the weights are stale; rescore"):
        join_weights(["a", "b", "c"], scores, labels=[0, 2, 2])
    # scores without labels (a table a user wrote) join by id alone
    np.testing.assert_array_equal(join_weights(["b"], scores.drop(["label"]), labels=[2]), np.array([0.2], np.float32))


def test_reweighted_recomputes_weights_from_the_difficulty_source():
    from rmd_ray.core import WeightConfig, difficulty_weights
    from rmd_ray.distributed.training.weight_join import reweighted

    table = pa.table({"id": ["a", "b", "c"], "weight": [0.9, 0.9, 0.9], "md": [3.0, 1.0, 2.0], "rmd": [0.0, 1.0, 5.0]})
    config = WeightConfig(temperature=0.4)
    out = reweighted(table, ("md", config, 0))
    assert out.column_names == ["id", "weight"] and out.column("id").to_pylist() == ["a", "b", "c"]
    expected = difficulty_weights(np.array([3.0, 1.0, 2.0]), config=config)
    np.testing.assert_allclose(out.column("weight").to_numpy(), expected)
    uniform = reweighted(table, ("uniform", WeightConfig(), 0)).column("weight").to_numpy()
    np.testing.assert_allclose(uniform, difficulty_weights(np.array([0.0, 1.0, 5.0])).mean())
    with pytest.raises(ValueError, match="source 'loss' reads the column 'loss', which the scores lack"):
        reweighted(table, ("loss", WeightConfig(), 0))


def test_weight_index_recomputes_a_sources_weights_in_its_task(ray_local, tmp_path):
    from rmd_ray.core import WeightConfig, difficulty_weights
    from rmd_ray.distributed.training.weight_join import build_weight_index, lookup_weights
    from rmd_ray.io.storage import write_parquet_atomic

    path = tmp_path / "scores.parquet"
    kmeans = np.array([4.0, 0.5, 2.0, 9.0])
    write_parquet_atomic(pa.table({"id": ["w", "x", "y", "z"], "weight": [0.5] * 4, "kmeans": kmeans}), path)
    config = WeightConfig(normalization="rank")
    ref, rows = build_weight_index(str(path), difficulty=("kmeans", config, 0))
    assert rows == 4
    expected = difficulty_weights(kmeans, config=config)[[3, 0]]
    np.testing.assert_allclose(lookup_weights(ref, ["z", "w"]), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="source 'md' reads the column 'md', which the scores lack"):
        build_weight_index(str(path), difficulty=("md", config, 0))


def test_train_config_checks_the_difficulty_source():
    with pytest.raises(ValueError, match="unknown difficulty source 'entropy'; valid names: kmeans, loss, md, rmd"):
        TrainConfig(difficulty="entropy")
    with pytest.raises(ValueError, match="TrainConfig.weight_config must be an rmd_ray.core.WeightConfig"):
        TrainConfig(difficulty="md", weight_config={"temperature": 1.0})


# ------------------------------------------------------------------------- decoding and statistics


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_decode_shard_grayscale_becomes_rgb_and_indices_follow_the_plan(ray_local):
    from rmd_ray.distributed.sources.plan import source_from_table
    from rmd_ray.distributed.training.ingest import Geometry, eval_dataset

    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (5, 6, 7), dtype=np.uint8)
    source = source_from_table(from_arrays(gray, [3, 1, 4, 1, 5], ids=list("edcba")), shard_rows=2)
    rows = eval_dataset(source, geometry=Geometry("cifar", None, (6, 7))).take_all()
    rows = sorted(rows, key=lambda r: r["index"])
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4]  # shard offset + row in shard
    assert [r["label"] for r in rows] == [3, 1, 4, 1, 5]
    for r, g in zip(rows, gray):
        assert r["image"].shape == (6, 7, 3) and r["image"].dtype == np.uint8
        for c in range(3):
            np.testing.assert_array_equal(r["image"][:, :, c], g)


def test_decode_split_resizes_with_pil_bilinear():
    rng = np.random.default_rng(1)
    rgb = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((9, 12), (16, 16))]
    table = pa.table({"id": ["p", "q"], "label": [0, 1], "image": [_png(a) for a in rgb]})
    images, _ = decode_split(table, preset="cifar", image_size=8)
    expected = np.asarray(Image.fromarray(rgb[0]).resize((8, 8), Image.Resampling.BILINEAR))
    assert images.shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(images[0], expected)


def test_decode_errors_name_the_row(ray_local):
    from rmd_ray.distributed.sources.plan import source_from_table
    from rmd_ray.distributed.training.ingest import Geometry, eval_dataset

    rgb = [np.zeros((h, 4, 3), np.uint8) for h in (4, 5)]
    table = pa.table({"id": ["p", "q"], "label": [0, 1], "image": [_png(a) for a in rgb]})
    with pytest.raises(ValueError, match="row id 'q' is 4x5 but the first image is 4x4"):
        decode_split(table, preset="cifar", image_size=None)
    broken = pa.table({"id": ["p", "bad"], "label": [0, 1], "image": [_png(rgb[0]), b"not an image"]})
    with pytest.raises(ValueError, match="row id 'bad': "):
        decode_split(broken, preset="cifar", image_size=None)
    # in the read tasks: the same rows fail with their ids
    named = table.replace_schema_metadata({b"classes": b'["a", "b"]'})
    with pytest.raises(Exception, match="row id 'q' is 4x5 but the first training image is 4x4; set image_size"):
        eval_dataset(source_from_table(named), geometry=Geometry("cifar", None, (4, 4))).take_all()
    negative = from_arrays(np.zeros((2, 4, 4), np.uint8), [0, 1]).set_column(1, "label", pa.array([0, -1]))
    with pytest.raises(Exception, match="row id '1': label -1 outside 0..1"):
        eval_dataset(source_from_table(negative), geometry=Geometry("cifar", None, (4, 4))).take_all()


def test_channel_moments_match_numpy_and_constant_channels_get_unit_std():
    from rmd_ray.nn.transforms import channel_moments, moments_to_mean_std

    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (10, 5, 5, 3), dtype=np.uint8)
    images[..., 2] = 77
    # merged from two shards by addition, as the streaming pass does
    mean, std = moments_to_mean_std(channel_moments(images[:4]) + channel_moments(images[4:]))
    x = images.astype(np.float64) / 255
    np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(std[:2], x.std(axis=(0, 1, 2))[:2], rtol=1e-9)
    assert std[2] == 1.0  # constant channel: normalised to 0, not NaN


def test_normalize_uint8_is_to_tensor_then_normalize():
    from torchvision import transforms as T

    from rmd_ray.nn.transforms import normalize_uint8

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    reference = torch.stack([T.Normalize(mean, std)(T.ToTensor()(Image.fromarray(a))) for a in images])
    got = normalize_uint8(torch.from_numpy(images), torch.tensor(mean), torch.tensor(std))
    assert got.shape == (2, 3, 5, 6)
    torch.testing.assert_close(got, reference, rtol=0, atol=0)


# ------------------------------------------------------------------------------------- TrainConfig


def test_config_normalises_hparams_and_is_hashable():
    a = TrainConfig(loss="focal", loss_hparams={"gamma": 3.0})
    b = TrainConfig(loss="focal", loss_hparams=(("gamma", 3.0),))
    assert a == b and hash(a) == hash(b) and a.loss_hparams == (("gamma", 3.0),)
    assert a.loss_kwargs == {"gamma": 3.0}
    assert TrainConfig(loss="crl").loss_kwargs == {}  # num_samples comes from the data
    assert loss_needs_weights("proposed") and not loss_needs_weights("entropy_reg")
    with pytest.raises(ValueError, match="unknown loss 'nope'"):
        loss_needs_weights("nope")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": "vgg"}, "unknown model 'vgg'; valid names: .*resnet18"),
        ({"width": 0.01}, r"width must be a finite number >= 1/32"),
        ({"width": "1"}, r"width must be a number"),
        ({"cifar_stem": 1}, r"cifar_stem must be True or False"),
        ({"augment": None}, r"augment must be True or False"),
        ({"loss": "hinge"}, "unknown loss 'hinge'"),
        ({"loss_hparams": {"alpha": -1.0}}, r"alpha must be a finite number in \[0, inf\)"),
        ({"loss_hparams": {"beta": 1.0}}, "unknown hyper-parameter"),
        ({"loss_hparams": (("alpha",),)}, r"must hold \(str name, value\) pairs"),
        ({"loss_hparams": 3}, "must be a mapping or a tuple of"),
        ({"loss_hparams": (("alpha", 0.1), ("alpha", 0.2))}, "names a hyper-parameter twice"),
        ({"loss_hparams": {"alpha": [0.1]}}, r"loss_hparams\['alpha'\] must be a number, bool or str"),
        ({"optim": {"lr": 0.1}}, "optim must be an rmd_ray.nn.engine.OptimConfig"),
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"num_workers": 1.5}, "num_workers must be an int >= 1"),
        ({"eval_every": 0}, "eval_every must be an int >= 1"),
        ({"seed": -1}, "seed must be an int >= 0"),
        ({"seed": 2**31}, "seed must be < 2"),
        ({"max_failures": -2}, r"max_failures must be an int >= 0 \(-1: no limit\)"),
        ({"cpus_per_worker": 0}, r"cpus_per_worker must be a number > 0"),
        ({"cpus_per_worker": float("nan")}, r"cpus_per_worker must be a number > 0"),
        ({"image_size": 0}, r"image_size must be None \(native size\) or an int >= 1"),
        ({"decode_cpus": 0}, r"decode_cpus must be a number in \(0, 64\]"),
        ({"preset": "vgg"}, r"preset must be one of \('auto', 'cifar', 'imagenet'\)"),
        ({"normalization": "x"}, r"normalization must be one of"),
        ({"shuffle": "global"}, r"shuffle must be one of \('fresh', 'seeded'\)"),
        ({"placement_strategy": "ANY"}, r"placement_strategy must be one of"),
        ({"shuffle_buffer_rows": -1}, r"shuffle_buffer_rows must be None or an int >= 0"),
        ({"decode_tasks": 0}, r"decode_tasks must be None \(auto\) or an int >= 1"),
        ({"shards_per_task": 0}, r"shards_per_task must be an int >= 1"),
        ({"decode_tasks": 2.5}, r"decode_tasks must be None \(auto\) or an int >= 1"),
        ({"num_workers": 2, "min_workers": 3}, r"min_workers must be None \(always num_workers\) or an int in "
                                               r"\[1, num_workers=2\] \(elastic training\), got 3"),
        ({"min_workers": 0}, r"min_workers must be None .* got 0"),
        ({"min_workers": 1.0}, r"min_workers must be None .* got 1.0"),
        ({"placement_timeout_s": 0}, r"placement_timeout_s must be a number of seconds > 0, got 0"),
        ({"placement_timeout_s": float("inf")}, r"placement_timeout_s must be a number of seconds > 0"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_fresh_shuffle_draws_a_new_order_every_epoch_and_seeded_repeats_it(ray_local):
    """Each iteration of the lazy training dataset is one epoch's execution: every row exactly once."""
    from rmd_ray.distributed.sources.plan import source_from_table
    from rmd_ray.distributed.training.ingest import Geometry, train_dataset

    source = source_from_table(TRAIN, shard_rows=32)  # 8 shards
    orders = {}
    for mode, tasks in (("fresh", 1), ("seeded", None)):  # one decode task in flight, or Ray Data's default
        ds = train_dataset(source, geometry=Geometry("cifar", None, (16, 16)), augment=True, weights_ref=None,
                           shuffle=mode, seed=0, decode_tasks=tasks)
        orders[mode] = [[int(r["index"]) for r in ds.iter_rows()] for _ in range(3)]
        assert all(sorted(order) == list(range(256)) for order in orders[mode])
    assert len({tuple(o) for o in orders["fresh"]}) == 3  # shard order and row order re-drawn per epoch
    assert len({tuple(o) for o in orders["seeded"]}) == 1  # fixed by the seed (epochs differ via the buffer)
    assert orders["seeded"][0] != list(range(256))  # rows are permuted even when seeded


@pytest.mark.parametrize(
    ("cluster_cpus", "extra", "workers", "per_worker", "asked", "expected"),
    [
        (3.0, 1, 1, 1.0, None, 1),  # local 2-core instance (2 + 1 declared): one core left after the worker
        (17.0, 1, 1, 1.0, None, 15),  # a 16-core GPU box: a decode task per free core
        (3.0, 0, 2, 1.0, None, 1),  # the test instance, two workers: at least one task
        (64.0, 0, 4, 4.0, None, 48),
        (3.0, 1, 1, 1.0, 6, 6),  # asked for: taken as given
    ],
)
def test_decode_tasks_default_to_the_cores_the_workers_leave(monkeypatch, cluster_cpus, extra, workers,
                                                              per_worker, asked, expected):
    from rmd_ray.distributed.runtime import cluster as runtime
    from rmd_ray.distributed.training import inputs

    monkeypatch.setattr(runtime.ray, "cluster_resources", lambda: {"CPU": cluster_cpus})
    monkeypatch.setitem(runtime._context, "extra_cpus", extra)
    config = TrainConfig(num_workers=workers, cpus_per_worker=per_worker, decode_tasks=asked)
    assert inputs.decode_tasks(config) == expected


def test_a_task_interleaves_its_group_of_shards_so_a_class_sorted_source_is_mixed(ray_local):
    """8 one-class shards, 4 a task: every block holds 4 classes (not 1), every row once, every epoch."""
    from rmd_ray.distributed.sources.plan import source_from_table
    from rmd_ray.distributed.training.ingest import Geometry, train_dataset

    labels = np.repeat(np.arange(8), 32)  # sorted by class, as ImageFolder and the CIFAR-10 Parquet are
    images = np.zeros((256, 4, 4, 3), np.uint8)
    table = from_arrays(images, labels, ids=[f"r{i}" for i in range(256)], classes=[str(k) for k in range(8)])
    source = source_from_table(table, shard_rows=32)
    assert [len(set(labels[s.index * 32:(s.index + 1) * 32])) for s in source.shards] == [1] * 8
    for mode in ("fresh", "seeded"):
        ds = train_dataset(source, geometry=Geometry("cifar", None, (4, 4)), augment=False, weights_ref=None,
                           shuffle=mode, seed=3, shards_per_task=4, decode_tasks=1)
        for _ in range(2):
            blocks = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
            assert [len(set(b["label"].tolist())) for b in blocks] == [4, 4]
            assert sorted(np.concatenate([b["index"] for b in blocks]).tolist()) == list(range(256))
            for b in blocks:  # index -> label as planned: rows keep their own labels through the interleave
                np.testing.assert_array_equal(labels[b["index"]], b["label"])


def test_each_yield_of_a_decode_task_is_its_own_block(ray_local):
    """Ray Data merges a task's yields up to 128 MiB: one 600-row task would be one block, handed over when
    the task ends. The ingest datasets stream 256-row blocks; the driver's own context is untouched."""
    from ray.data import DataContext

    from rmd_ray.distributed.sources.plan import source_from_table
    from rmd_ray.distributed.training.ingest import Geometry, eval_dataset, train_dataset

    default = DataContext.get_current().target_max_block_size
    labels = np.arange(600) % 3
    table = from_arrays(np.zeros((600, 8, 8, 3), np.uint8), labels, ids=[f"r{i}" for i in range(600)],
                        classes=["a", "b", "c"])
    source = source_from_table(table, shard_rows=300)
    geometry = Geometry("cifar", None, (8, 8))
    datasets = [
        train_dataset(source, geometry=geometry, augment=False, weights_ref=None, shuffle="seeded", seed=0,
                      shards_per_task=2, decode_tasks=1),
        eval_dataset(source, geometry=geometry),
    ]
    for ds in datasets:
        assert ds.context.target_max_block_size == 256 * 8 * 8 * 3
        sizes = [bundle.num_rows() for bundle in ds.iter_internal_ref_bundles()]
        assert sum(sizes) == 600 and max(sizes) <= 256, sizes
    assert DataContext.get_current().target_max_block_size == default
    # Ray Train's DataConfig copies the dataset before splitting it: the copy keeps the target
    assert datasets[0].copy(datasets[0]).context.target_max_block_size == 256 * 8 * 8 * 3
