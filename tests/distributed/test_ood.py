"""OOD detection of a checkpoint: the OOD source predicted by Ray model actors at the checkpoint's geometry,
scored against in-distribution predictions, equal to a local reference computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rmd_ray.core.metrics import OOD_SCORES, ood_report
from rmd_ray.data.readers import from_arrays, read_source
from rmd_ray.distributed.prediction.ood import ood_eval
from rmd_ray.distributed.prediction.predict import classifier_from_checkpoint, predict_source
from rmd_ray.distributed.sources.plan import source_from_table
from rmd_ray.evaluation.shift import decode_split
from rmd_ray.io.parts import read_table
from rmd_ray.nn.engine import save_checkpoint
from rmd_ray.nn.models import build_model
from rmd_ray.nn.transforms import normalize_uint8

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
MEAN, STD = [0.3, 0.4, 0.5], [0.25, 0.2, 0.3]


def _checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=10, cifar_stem=True, width=0.0625).eval()
    extra = {"mean": MEAN, "std": STD, "preset": "cifar", "image_size": 16, "input_side": 16}
    path = save_checkpoint(tmp_path / "ckpt" / "model.pt", model=model, optimizer=None, scheduler=None, epoch=1,
                           extra=extra)
    return model, path


def _logits(model, table) -> np.ndarray:
    # the reference, written from the geometry's definition: resize to 16 x 16 (PIL bilinear), then normalise
    images, _ = decode_split(table, preset="cifar", image_size=16)
    with torch.no_grad():
        return model(normalize_uint8(torch.from_numpy(images), torch.tensor(MEAN), torch.tensor(STD))).numpy()


def test_ood_eval_predicts_in_ray_and_equals_the_local_reference(ray_local, tmp_path):
    model, path = _checkpoint(tmp_path)
    rng = np.random.default_rng(0)
    id_table = from_arrays(rng.integers(0, 256, (40, 20, 20, 3), dtype=np.uint8), rng.integers(0, 10, 40),
                           classes=[str(k) for k in range(10)])
    spec = classifier_from_checkpoint(str(path.parent))  # a checkpoint folder works as well as model.pt
    assert (spec.preset, spec.image_size, spec.mean, spec.std) == ("cifar", 16, tuple(MEAN), tuple(STD))
    in_uri = predict_source(source_from_table(id_table, shard_rows=16), spec, str(tmp_path / "in.parquet"))
    reports = ood_eval(str(path), in_uri, {"digits": "sklearn-digits:"}, output_dir=str(tmp_path / "ood"), limit=50)

    digits = read_source("sklearn-digits:", limit=50)  # 8 x 8 grey digits, resized to the model's 16 px
    predicted = read_table(str(tmp_path / "ood" / "digits.parquet"))
    assert sorted(predicted.column("id").to_pylist()) == sorted(digits.column("id").to_pylist())  # each once
    reference = ood_report(_logits(model, id_table), _logits(model, digits))
    got = reports["digits"]
    assert (got["n_in"], got["n_out"]) == (40, 50)
    for score in OOD_SCORES:
        for key, value in reference[score].items():
            assert got[score][key] == pytest.approx(value, abs=1e-6), (score, key)


def test_ood_eval_errors(ray_local, tmp_path):
    _, path = _checkpoint(tmp_path)
    with pytest.raises(ValueError, match="ood_sources is empty: pass NAME=SOURCE pairs"):
        ood_eval(str(path), "unused", {}, output_dir=str(tmp_path))
    bare = tmp_path / "bare" / "model.pt"
    save_checkpoint(bare, model=build_model("resnet18", num_classes=10, width=0.0625), optimizer=None,
                    scheduler=None, epoch=1)
    with pytest.raises(ValueError, match=r"holds no input geometry \(mean, std, input_side\)"):
        classifier_from_checkpoint(str(bare))
    with pytest.raises(ValueError, match="sklearn-digits takes no argument"):
        read_source("sklearn-digits:/x")


def test_distributed_corruption_shift_equals_the_in_process_evaluation(ray_local, tmp_path):
    """One Ray execution (corrupt in tasks, predict in actors) gives the rows of checkpoint_corruption_eval."""
    from rmd_ray.distributed.prediction.shift_eval import shift_eval
    from rmd_ray.evaluation.shift import checkpoint_corruption_eval

    _, path = _checkpoint(tmp_path)
    rng = np.random.default_rng(1)
    table = from_arrays(rng.integers(0, 256, (24, 20, 20, 3), dtype=np.uint8), rng.integers(0, 10, 24),
                        classes=[str(k) for k in range(10)])
    names, severities = ["gaussian_noise", "motion_blur", "contrast"], [1, 5]
    got = shift_eval(str(path), source_from_table(table, shard_rows=10), corruptions=names, severities=severities)
    reference = checkpoint_corruption_eval(path, table, corruptions=names, severities=severities)
    assert [(r["corruption"], r["severity"]) for r in got] == [(r["corruption"], r["severity"]) for r in reference]
    for g, r in zip(got, reference):
        assert g["n"] == 24 and g["acc"] == r["acc"]
        assert g["ece_mass"] == pytest.approx(r["ece_mass"], abs=1e-9)
        assert g["ece_width"] == pytest.approx(r["ece_width"], abs=1e-9)
    with pytest.raises(ValueError, match="severities must be distinct integers in 1..5"):
        shift_eval(str(path), source_from_table(table), corruptions=names, severities=[0])


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_a_published_imagenet_c_tree_is_predicted_in_ray_as_the_whole_read_gives(ray_local, tmp_path):
    """imagenet-c:ROOT on an ImageNet-C tree: each (corruption, severity) planned as a folder source and
    predicted by model actors gives the numbers of the set read whole and predicted in-process."""
    from PIL import Image

    from rmd_ray.distributed.prediction.published_shift import published_shift_eval
    from rmd_ray.evaluation.shift import checkpoint_corruption_eval

    rng = np.random.default_rng(3)
    root = tmp_path / "ImageNet-C"
    for severity in (1, 3):
        for wnid in ("n01", "n02", "n03"):
            folder = root / "fog" / str(severity) / wnid
            folder.mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i}.JPEG")
    _, checkpoint = _checkpoint(tmp_path)
    rows = published_shift_eval(str(checkpoint), str(root), output_dir=str(tmp_path / "pred"), severities=[1, 3])
    whole = checkpoint_corruption_eval(checkpoint, read_source(f"imagenet-c:{root}"), severities=[1, 3])
    assert [(r["corruption"], r["severity"]) for r in rows] == [("fog", 1), ("fog", 3)]
    for got, want in zip(rows, whole):
        assert got["acc"] == want["acc"]
        assert got["ece_mass"] == pytest.approx(want["ece_mass"], abs=1e-6)
    with pytest.raises(ValueError, match=r"has no severity 2 of fog"):
        published_shift_eval(str(checkpoint), str(root), output_dir=str(tmp_path / "p2"), severities=[2])
    (root / "fog" / "3" / "n03" / "0.JPEG").rename(root / "fog" / "3" / "n04.JPEG")
    for f in (root / "fog" / "3" / "n03").iterdir():
        f.unlink()
    (root / "fog" / "3" / "n03").rmdir()
    with pytest.raises(ValueError, match=r"holds other wnid folders than the first"):
        published_shift_eval(str(checkpoint), str(root), output_dir=str(tmp_path / "p3"), severities=[1, 3])
