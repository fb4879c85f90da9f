"""Engine: learning on a separable toy problem, NaN guard, predict order, exact resume, checkpoints,
optimiser/schedule values, CIFAR augmentation against a naive per-image reference."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rmd_ray.nn.engine import (
    SCHEDULES,
    NonFiniteLossError,
    OptimConfig,
    build_optimizer,
    build_scheduler,
    load_checkpoint,
    model_from_checkpoint,
    model_signature,
    predict,
    random_crop_flip,
    rescale_scheduler,
    save_checkpoint,
    train_one_epoch,
)
from rmd_ray.nn.losses import build_loss
from rmd_ray.nn.models import build_model

torch.set_num_threads(1)

K, S = 4, 8  # classes, image side


def _toy(n=128, *, seed=0, noise=0.8):
    """Class templates + Gaussian noise: linearly separable at this noise level."""
    g = torch.Generator().manual_seed(1234)
    templates = torch.randn(K, 3, S, S, generator=g)
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % K
    images = templates[labels] + noise * torch.randn(n, 3, S, S, generator=g)
    weights = torch.rand(n, generator=g)
    return images, labels, weights


def _batches(images, labels, weights, *, epoch, batch_size=16, ids=None):
    n = len(labels)
    ids = torch.arange(n) if ids is None else ids
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(1000 + epoch))
    for start in range(0, n, batch_size):
        idx = perm[start : start + batch_size]
        yield {"image": images[idx], "label": labels[idx], "weight": weights[idx], "id": ids[idx]}


def _model(seed=0, name="resnet18"):
    torch.manual_seed(seed)
    return build_model(name, num_classes=K, cifar_stem=True, width=0.125)


def _params_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------ learning


def test_three_epochs_learn_a_separable_problem():
    images, labels, weights = _toy(128)
    model = _model()
    config = OptimConfig(lr=0.05, epochs=3, weight_decay=5e-4)
    opt = build_optimizer(model, config)
    sched = build_scheduler(opt, config, steps_per_epoch=8)
    loss_fn = build_loss("proposed", alpha=0.3)
    history = [
        train_one_epoch(model, _batches(images, labels, weights, epoch=e), loss_fn, opt, scheduler=sched, device="cpu")
        for e in range(3)
    ]
    assert [h["n"] for h in history] == [128] * 3
    assert [h["steps"] for h in history] == [8] * 3
    assert history[0]["loss"] > 0.5
    assert history[2]["loss"] < 0.25 * history[0]["loss"]
    assert history[2]["loss"] < 0.2
    assert history[2]["acc"] >= 0.95
    # cosine ran to its end: 24 scheduler steps, lr = 0.05 * (1 + cos(pi)) / 2 = 0
    assert sched.last_epoch == 24
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    # held-out samples from the same templates (BN in eval mode)
    test_images, test_labels, test_weights = _toy(64, seed=99)
    _, y, logits = predict(model, _batches(test_images, test_labels, test_weights, epoch=0), device="cpu")
    assert (logits.argmax(1) == y).mean() >= 0.9


def test_amp_is_a_no_op_on_cpu():
    images, labels, weights = _toy(32)
    results = []
    for amp in (False, True):
        model = _model(seed=1)
        opt = build_optimizer(model, OptimConfig(lr=0.05, epochs=1))
        out = train_one_epoch(
            model, _batches(images, labels, weights, epoch=0), build_loss("ce"), opt, device="cpu", amp=amp
        )
        results.append((model, out))
    assert _params_equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]


def test_numpy_batches_equal_tensor_batches():
    images, labels, weights = _toy(32)
    models = []
    for as_numpy in (False, True):
        model = _model(seed=2)
        opt = build_optimizer(model, OptimConfig(lr=0.05, epochs=1))
        batches = _batches(images, labels, weights, epoch=0)
        if as_numpy:
            batches = ({k: _read_only(v.numpy(), k) for k, v in b.items()} for b in batches)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. torch's "NumPy array is not writable"
            train_one_epoch(model, batches, build_loss("ce"), opt, device="cpu")
        models.append(model)
    assert _params_equal(*models)


def _read_only(arr, key):
    """Like Ray Data's numpy batches: read-only arrays, labels/ids in a narrower int type."""
    arr = arr.astype(np.int32) if key in ("label", "id") else arr.copy()
    arr.setflags(write=False)
    return arr


# ------------------------------------------------------------------ non-finite loss


class _NaNAt(nn.Module):
    """Linear classifier whose output turns NaN on the given forward call (1-based)."""

    def __init__(self, bad_call: int) -> None:
        super().__init__()
        self.lin = nn.Linear(3 * S * S, K)
        self.bad_call, self.calls = bad_call, 0

    def forward(self, x):
        self.calls += 1
        out = self.lin(x.flatten(1))
        return out * math.nan if self.calls == self.bad_call else out


def test_nan_loss_raises_with_step_and_ids_before_stepping():
    images, labels, weights = _toy(64)
    torch.manual_seed(0)
    model = _NaNAt(bad_call=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = build_optimizer(model, OptimConfig(lr=0.1, epochs=1))
    batches = list(_batches(images, labels, weights, epoch=0))
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss \(nan\) at step 40; sample ids") as err:
        train_one_epoch(model, batches, build_loss("ce"), opt, device="cpu", start_step=40)
    assert isinstance(err.value, ValueError)
    assert err.value.step == 40
    assert err.value.ids == batches[0]["id"].tolist()
    assert str(batches[0]["id"].tolist()) in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_nan_step_defaults_to_scheduler_step_count():
    images, labels, weights = _toy(64)
    model = _NaNAt(bad_call=7)
    config = OptimConfig(lr=0.01, epochs=2)
    opt = build_optimizer(model, config)
    sched = build_scheduler(opt, config, steps_per_epoch=4)
    out = train_one_epoch(
        model,
        _batches(images, labels, weights, epoch=0),
        build_loss("ce"),
        opt,
        scheduler=sched,
        device="cpu",
    )
    assert out["steps"] == 4 and sched.last_epoch == 4
    batches = list(_batches(images, labels, weights, epoch=1))
    # calls 5, 6 fine; call 7 = third batch of epoch 1 = global step 4 + 2
    with pytest.raises(NonFiniteLossError, match=r"at step 6;") as err:
        train_one_epoch(model, batches, build_loss("ce"), opt, scheduler=sched, device="cpu")
    assert err.value.ids == batches[2]["id"].tolist()


def test_infinite_loss_raises():
    class Inf(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3 * S * S, K)

        def forward(self, x):
            out = self.lin(x.flatten(1))
            return torch.cat([out[:, :1] * 0 + math.inf, out[:, 1:]], dim=1)

    images, labels, weights = _toy(16)
    model = Inf()
    opt = build_optimizer(model, OptimConfig(lr=0.1, epochs=1))
    with pytest.raises(NonFiniteLossError, match="at step 0"):
        train_one_epoch(model, _batches(images, labels, weights, epoch=0), build_loss("ce"), opt, device="cpu")


# ------------------------------------------------------------------ batch validation


def test_batch_validation():
    model = _model()
    opt = build_optimizer(model, OptimConfig(epochs=1))
    images, labels, weights = _toy(8)
    good = {"image": images, "label": labels, "id": torch.arange(8)}
    run = functools.partial(train_one_epoch, model, loss_fn=build_loss("ce"), optimizer=opt, device="cpu")
    with pytest.raises(ValueError, match=r"batch is missing key\(s\) \['id'\]; it has \['image', 'label'\]"):
        run([{"image": images, "label": labels}])
    with pytest.raises(TypeError, match="each batch must be a mapping"):
        run([(images, labels)])
    with pytest.raises(ValueError, match=r"batch\['image'\] must be floating \(B, C, H, W\)"):
        run([dict(good, image=(images * 10).to(torch.uint8))])
    with pytest.raises(ValueError, match=r"batch\['label'\] must have shape \(8,\)"):
        run([dict(good, label=labels[:4])])
    with pytest.raises(ValueError, match=r"batch\['label'\] must hold integers"):
        run([dict(good, label=labels.float())])
    with pytest.raises(ValueError, match=r"batch\['id'\] must hold integers"):
        run([dict(good, id=torch.arange(8.0))])
    with pytest.raises(ValueError, match=r"batch\['weight'\] must be floating"):
        run([dict(good, weight=torch.ones(8, dtype=torch.int64))])
    with pytest.raises(ValueError, match="batches was empty"):
        run([])
    # the proposed loss needs weights: its own error comes through
    with pytest.raises(ValueError, match="pass the per-sample difficulty weights s"):
        train_one_epoch(model, [good], build_loss("proposed"), opt, device="cpu")


# ------------------------------------------------------------------ predict


def test_predict_keeps_input_order_and_matches_forward():
    images, labels, weights = _toy(40)
    model = _model(seed=3)
    model.train()
    ids = torch.randperm(40, generator=torch.Generator().manual_seed(5)) + 1000
    batches = list(_batches(images, labels, weights, epoch=3, batch_size=7, ids=ids))
    out_ids, out_labels, logits = predict(model, batches, device="cpu")
    assert model.training  # mode restored
    assert out_ids.dtype == np.int64 and out_labels.dtype == np.int64 and logits.dtype == np.float32
    assert out_ids.tolist() == torch.cat([b["id"] for b in batches]).tolist()
    assert out_labels.tolist() == torch.cat([b["label"] for b in batches]).tolist()
    model.eval()
    with torch.no_grad():
        expected = model(torch.cat([b["image"] for b in batches]))
    np.testing.assert_allclose(logits, expected.numpy(), rtol=1e-5, atol=1e-6)
    # the mapping id -> row is right: the row carrying ids[0] holds image 0's logits
    j = int(np.where(out_ids == int(ids[0]))[0][0])
    with torch.no_grad():
        np.testing.assert_allclose(logits[j], model(images[:1])[0].numpy(), rtol=1e-5, atol=1e-6)


def test_predict_without_labels_and_empty():
    images, _, _ = _toy(6)
    model = _model()
    ids, labels, logits = predict(model, [{"image": images, "id": np.arange(6)}], device="cpu")
    assert ids.tolist() == list(range(6)) and labels.tolist() == [-1] * 6 and logits.shape == (6, K)
    with pytest.raises(ValueError, match="batches was empty: nothing to predict"):
        predict(model, [], device="cpu")


# ------------------------------------------------------------------ checkpoints


def _train_setup(loss_name, *, seed, schedule="cosine", n=64):
    model = _model(seed=seed)
    config = OptimConfig(lr=0.05, epochs=2, schedule=schedule, milestones=(1,))
    opt = build_optimizer(model, config)
    sched = build_scheduler(opt, config, steps_per_epoch=n // 16)
    loss_fn = build_loss(loss_name, num_samples=n) if loss_name == "crl" else build_loss(loss_name)
    return model, opt, sched, loss_fn


def _epoch(model, opt, sched, loss_fn, gen, data, epoch):
    augment = functools.partial(random_crop_flip, padding=2, generator=gen)
    return train_one_epoch(
        model, _batches(*data, epoch=epoch), loss_fn, opt, scheduler=sched, device="cpu", augment=augment
    )


@pytest.mark.parametrize("loss_name, schedule", [("proposed", "cosine"), ("crl", "multistep")])
def test_resume_equals_uninterrupted_training(tmp_path, loss_name, schedule):
    data = _toy(64)
    # uninterrupted: 2 epochs
    model_a, opt_a, sched_a, loss_a = _train_setup(loss_name, seed=0, schedule=schedule)
    gen_a = torch.Generator().manual_seed(7)
    for e in range(2):
        _epoch(model_a, opt_a, sched_a, loss_a, gen_a, data, e)
    # interrupted after epoch 0, resumed into freshly built (differently initialised) objects
    model_b, opt_b, sched_b, loss_b = _train_setup(loss_name, seed=0, schedule=schedule)
    gen_b = torch.Generator().manual_seed(7)
    _epoch(model_b, opt_b, sched_b, loss_b, gen_b, data, 0)
    path = save_checkpoint(
        tmp_path / "ckpt" / "last.pt",
        model=model_b,
        optimizer=opt_b,
        scheduler=sched_b,
        epoch=1,
        extra={"rng": gen_b.get_state(), "note": "after epoch 0"},
        loss_fn=loss_b,
    )
    model_c, opt_c, sched_c, loss_c = _train_setup(loss_name, seed=123, schedule=schedule)
    assert not _params_equal(model_b, model_c)
    info = load_checkpoint(path, model=model_c, optimizer=opt_c, scheduler=sched_c, loss_fn=loss_c)
    assert info["epoch"] == 1 and info["extra"]["note"] == "after epoch 0"
    assert _params_equal(model_b, model_c)
    gen_c = torch.Generator()
    gen_c.set_state(info["extra"]["rng"])
    _epoch(model_c, opt_c, sched_c, loss_c, gen_c, data, 1)
    assert _params_equal(model_a, model_c)
    assert sched_a.last_epoch == sched_c.last_epoch == 8
    assert opt_a.param_groups[0]["lr"] == opt_c.param_groups[0]["lr"]
    if loss_name == "crl":
        assert torch.equal(loss_a.seen_count, loss_c.seen_count) and loss_c.seen_count.sum() == 128
        # train_one_epoch ends every epoch on the loss: E of crl's normalisation, saved and resumed
        assert int(loss_a.epochs_finished) == int(loss_c.epochs_finished) == 2
        assert torch.equal(loss_a.correct_count, loss_c.correct_count)


def test_round_trip_restores_params_and_optimizer_state(tmp_path):
    data = _toy(32)
    model, opt, sched, loss_fn = _train_setup("ce", seed=0, n=32)
    train_one_epoch(model, _batches(*data, epoch=0), loss_fn, opt, scheduler=sched, device="cpu")
    path = save_checkpoint(tmp_path / "c.pt", model=model, optimizer=opt, scheduler=sched, epoch=1, extra={})
    model2, opt2, sched2, _ = _train_setup("ce", seed=9, n=32)
    load_checkpoint(path, model=model2, optimizer=opt2, scheduler=sched2)
    assert _params_equal(model, model2)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    assert s1["state"].keys() == s2["state"].keys() and len(s1["state"]) > 0
    for k in s1["state"]:
        assert torch.equal(s1["state"][k]["momentum_buffer"], s2["state"][k]["momentum_buffer"])
    assert sched.state_dict() == sched2.state_dict()
    assert os.listdir(tmp_path) == ["c.pt"]  # no temporary file left behind


def test_wrong_model_checkpoint_names_both_models(tmp_path):
    path = save_checkpoint(tmp_path / "r18.pt", model=_model(name="resnet18"), optimizer=None, scheduler=None, epoch=0)
    with pytest.raises(
        ValueError,
        match=r"saved from model resnet18 \(num_classes=4, width=0.125, cifar_stem=True"
        r".*expected model is resnet34 \(num_classes=4",
    ):
        load_checkpoint(path, model=_model(name="resnet34"))
    other = build_model("resnet18", num_classes=10, cifar_stem=True, width=0.125)
    with pytest.raises(ValueError, match=r"expected model is resnet18 \(num_classes=10, width=0.125"):
        load_checkpoint(path, model=other)
    # explicit expected signature
    sig = dict(model_signature(_model()), model="densenet121")
    with pytest.raises(ValueError, match="expected model is densenet121"):
        load_checkpoint(path, model=_model(), expected_signature=sig)


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_model_from_checkpoint_rebuilds_architecture_and_weights(tmp_path, name):
    torch.manual_seed(3)
    model = build_model(name, num_classes=3, cifar_stem=True, width=0.0625).eval()
    folder = tmp_path / "ray_checkpoint"
    save_checkpoint(folder / "model.pt", model=model, optimizer=None, scheduler=None, epoch=7, extra={"mean": [0.5]})
    x = torch.randn(5, 3, 16, 16)
    for path in (folder, folder / "model.pt"):  # a Ray checkpoint folder or the file
        rebuilt, info = model_from_checkpoint(path)
        assert not rebuilt.training
        assert model_signature(rebuilt) == model_signature(model)
        assert info["epoch"] == 7 and info["extra"] == {"mean": [0.5]}
        with torch.no_grad():
            torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)


def test_model_from_checkpoint_errors(tmp_path):
    with pytest.raises(ValueError, match="is not a checkpoint file or a folder with model.pt"):
        model_from_checkpoint(tmp_path / "missing")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match="is not an rmd-ray checkpoint"):
        model_from_checkpoint(foreign)
    custom = save_checkpoint(tmp_path / "custom.pt", model=nn.Linear(2, 2), optimizer=None, scheduler=None, epoch=0)
    with pytest.raises(ValueError, match="saved from Linear.*which build_model cannot rebuild.*call load_checkpoint"):
        model_from_checkpoint(custom)


def test_same_name_different_layout(tmp_path):
    path = save_checkpoint(tmp_path / "lin.pt", model=nn.Linear(4, 2), optimizer=None, scheduler=None, epoch=0)
    with pytest.raises(
        ValueError,
        match=r"saved from model Linear .* \(same name and settings, but the parameter "
        r"layout differs\)",
    ):
        load_checkpoint(path, model=nn.Linear(4, 3))


def test_checkpoint_validation(tmp_path):
    model = _model()
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        save_checkpoint(tmp_path / "a.pt", model=model, optimizer=None, scheduler=None, epoch=-1)
    with pytest.raises(TypeError, match="extra must be a dict"):
        save_checkpoint(tmp_path / "a.pt", model=model, optimizer=None, scheduler=None, epoch=0, extra=[1])
    with pytest.raises(
        TypeError, match=r"extra\['hist'\]\[1\] has type ndarray, which torch.load\(weights_only=True\)"
    ):
        save_checkpoint(
            tmp_path / "a.pt",
            model=model,
            optimizer=None,
            scheduler=None,
            epoch=0,
            extra={"hist": [1.0, np.zeros(3)]},
        )
    assert os.listdir(tmp_path) == []
    path = save_checkpoint(tmp_path / "a.pt", model=model, optimizer=None, scheduler=None, epoch=0)
    opt = build_optimizer(model, OptimConfig(epochs=1))
    with pytest.raises(ValueError, match=r"holds no optimizer state; pass optimizer=None"):
        load_checkpoint(path, model=model, optimizer=opt)
    torch.save({"state": model.state_dict()}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="is not an rmd-ray checkpoint"):
        load_checkpoint(tmp_path / "plain.pt", model=model)


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = _model()
    path = save_checkpoint(tmp_path / "c.pt", model=model, optimizer=None, scheduler=None, epoch=3)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model=model, optimizer=None, scheduler=None, epoch=4)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["c.pt"]
    assert load_checkpoint(path, model=model)["epoch"] == 3


def test_wrapped_model_signature_and_checkpoint(tmp_path):
    model = _model()
    wrapped = nn.DataParallel(model)  # CPU-only: a plain wrapper adding the "module." prefix
    assert model_signature(wrapped) == model_signature(model)
    assert model_signature(model)["model"] == "resnet18"
    path = save_checkpoint(tmp_path / "w.pt", model=wrapped, optimizer=None, scheduler=None, epoch=0)
    fresh = _model(seed=5)
    load_checkpoint(path, model=fresh)
    assert _params_equal(model, fresh)


# ------------------------------------------------------------------ optimiser and schedule


def test_optim_config_defaults_and_frozen():
    c = OptimConfig()
    assert (c.lr, c.momentum, c.weight_decay, c.schedule, c.gamma, c.nesterov) == (
        0.1,
        0.9,
        1e-4,
        "cosine",
        0.1,
        False,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.lr = 0.2
    assert SCHEDULES.names() == ["cosine", "multistep"]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"lr": 0.0}, r"OptimConfig.lr must be > 0"),
        ({"lr": math.nan}, r"OptimConfig.lr must be a finite number"),
        ({"lr": "0.1"}, r"OptimConfig.lr must be a finite number"),
        ({"momentum": 1.0}, r"OptimConfig.momentum must be in \[0, 1\)"),
        ({"momentum": -0.1}, r"OptimConfig.momentum must be in \[0, 1\)"),
        ({"weight_decay": -1e-4}, r"OptimConfig.weight_decay must be >= 0"),
        ({"epochs": 0}, r"OptimConfig.epochs must be an int >= 1"),
        ({"epochs": 2.5}, r"OptimConfig.epochs must be an int >= 1"),
        ({"schedule": "step"}, r"unknown schedule 'step'; valid names: cosine, multistep"),
        ({"gamma": 0.0}, r"OptimConfig.gamma must be in \(0, 1\]"),
        ({"gamma": 1.5}, r"OptimConfig.gamma must be in \(0, 1\]"),
        ({"nesterov": 1}, r"OptimConfig.nesterov must be a bool"),
        ({"nesterov": True, "momentum": 0.0}, r"nesterov=True needs momentum > 0"),
        ({"milestones": [100, 150]}, r"OptimConfig.milestones must be a tuple of ints"),
        ({"milestones": (100.0,)}, r"OptimConfig.milestones must be a tuple of ints"),
        ({"milestones": (150, 100)}, r"OptimConfig.milestones must be strictly increasing"),
        (
            {"schedule": "multistep", "epochs": 100, "milestones": (50, 100)},
            r"milestones must be non-empty epochs in \[1, epochs=100\) for schedule 'multistep'",
        ),
        (
            {"schedule": "multistep", "milestones": (0, 5)},
            r"milestones must be non-empty epochs in \[1, epochs=200\)",
        ),
        ({"schedule": "multistep", "milestones": ()}, r"milestones must be non-empty"),
    ],
)
def test_optim_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        OptimConfig(**kw)


def test_cosine_milestones_are_ignored():
    assert OptimConfig(epochs=10, schedule="cosine", milestones=(100, 150)).epochs == 10


def test_build_optimizer_settings():
    model = nn.Linear(3, 2)
    opt = build_optimizer(model, OptimConfig(lr=0.2, momentum=0.5, weight_decay=5e-4, nesterov=True))
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.SGD)
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (
        0.2,
        0.5,
        5e-4,
        True,
    )
    assert len(group["params"]) == 2
    model.bias.requires_grad_(False)
    assert len(build_optimizer(model, OptimConfig()).param_groups[0]["params"]) == 1
    with pytest.raises(TypeError, match="config must be an OptimConfig"):
        build_optimizer(model, {"lr": 0.1})
    model.weight.requires_grad_(False)
    with pytest.raises(ValueError, match="model has no trainable parameters"):
        build_optimizer(model, OptimConfig())


def _lrs(config, steps_per_epoch, n_steps):
    opt = build_optimizer(nn.Linear(2, 2), config)
    sched = build_scheduler(opt, config, steps_per_epoch=steps_per_epoch)
    lrs = []
    for _ in range(n_steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_cosine_schedule_values():
    lrs = _lrs(OptimConfig(lr=0.1, epochs=4), steps_per_epoch=5, n_steps=21)
    expected = [0.05 * (1 + math.cos(math.pi * t / 20)) for t in range(21)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-9, atol=1e-12)
    assert lrs[10] == pytest.approx(0.05)


def test_multistep_schedule_values():
    config = OptimConfig(lr=0.1, epochs=4, schedule="multistep", milestones=(1, 3), gamma=0.5)
    lrs = _lrs(config, steps_per_epoch=3, n_steps=12)
    np.testing.assert_allclose(lrs, [0.1] * 3 + [0.05] * 6 + [0.025] * 3, rtol=1e-12)


def test_build_scheduler_validation():
    opt = build_optimizer(nn.Linear(2, 2), OptimConfig())
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="steps_per_epoch must be an int >= 1"):
            build_scheduler(opt, OptimConfig(), steps_per_epoch=bad)
    with pytest.raises(TypeError, match="config must be an OptimConfig"):
        build_scheduler(opt, "cosine", steps_per_epoch=3)


@pytest.mark.parametrize("config", [OptimConfig(lr=0.1, epochs=4),
                                    OptimConfig(lr=0.1, epochs=4, schedule="multistep", milestones=(1, 3), gamma=0.5)])
def test_rescale_scheduler_continues_at_the_share_of_training_done(config):
    # 1 epoch at 6 steps an epoch (two workers), then resumed at 12 steps an epoch (one worker left)
    opt = build_optimizer(nn.Linear(2, 2), config)
    sched = build_scheduler(opt, config, steps_per_epoch=6)
    for _ in range(6):
        opt.step()
        sched.step()
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    opt = build_optimizer(nn.Linear(2, 2), config)
    sched = build_scheduler(opt, config, steps_per_epoch=12)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    assert rescale_scheduler(sched, opt, config, steps_per_epoch=12, epoch=1) is True
    lrs = []
    for _ in range(36):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # the rest of a run of 12 steps an epoch from its step 12: it ends at the schedule's end, not past it
    np.testing.assert_allclose(lrs, _lrs(config, steps_per_epoch=12, n_steps=48)[12:], rtol=1e-9, atol=1e-12)
    if config.schedule == "cosine":
        assert lrs[0] == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))
    else:
        assert lrs[:24] == [0.05] * 24 and lrs[24:] == [0.025] * 12
    assert rescale_scheduler(sched, opt, config, steps_per_epoch=12, epoch=4) is False  # already there
    with pytest.raises(ValueError, match=r"epoch must be an int in \[0, 4\]"):
        rescale_scheduler(sched, opt, config, steps_per_epoch=12, epoch=5)


# ------------------------------------------------------------------ augmentation


def _naive_crop_flip(images, padding, generator):
    """Per-image loop with the documented draw order."""
    b, _, h, w = images.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    out = []
    for i in range(b):
        padded = F.pad(images[i], (padding,) * 4)
        dy, dx = int(offsets[0, i]), int(offsets[1, i])
        crop = padded[:, dy : dy + h, dx : dx + w]
        out.append(crop.flip(-1) if flip[i] else crop)
    return torch.stack(out)


@pytest.mark.parametrize("padding", [0, 1, 4])
def test_random_crop_flip_matches_naive_loop(padding):
    images = torch.randn(16, 3, 8, 6)
    out = random_crop_flip(images, padding=padding, generator=torch.Generator().manual_seed(3))
    expected = _naive_crop_flip(images, padding, torch.Generator().manual_seed(3))
    assert out.shape == images.shape and out.is_contiguous()
    assert torch.equal(out, expected)


def test_random_crop_flip_draws_per_image():
    images = torch.arange(64 * 36, dtype=torch.float32).reshape(64, 1, 6, 6)
    out = random_crop_flip(images, padding=2, generator=torch.Generator().manual_seed(0))
    # each output is the input shifted by its own (dy, dx) and maybe flipped: the top-left value's
    # position inside the original image differs between images (one draw per batch would not)
    shifts = {tuple(out[i, 0].flatten()[:2].tolist()) for i in range(64)}
    assert len(shifts) > 10
    flips = sum(bool(out[i, 0, 3, 1] > out[i, 0, 3, 2]) for i in range(64))
    assert 16 < flips < 48
    # padding 0: every image is either itself or its mirror
    same = random_crop_flip(images, padding=0, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(same[i], images[i]) or torch.equal(same[i], images[i].flip(-1)) for i in range(64))


def test_random_crop_flip_validation():
    with pytest.raises(ValueError, match=r"images must be a floating-point tensor of shape \(B, C, H, W\)"):
        random_crop_flip(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match=r"images must be a floating-point tensor"):
        random_crop_flip(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="padding must be an int >= 0"):
        random_crop_flip(torch.zeros(2, 3, 8, 8), padding=-1)
    with pytest.raises(ValueError, match="padding must be an int >= 0"):
        random_crop_flip(torch.zeros(2, 3, 8, 8), padding=1.5)
