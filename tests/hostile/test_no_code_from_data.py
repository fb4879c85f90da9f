"""No code runs from a data file: CIFAR pickles go through a restricted unpickler, checkpoints through
``torch.load(weights_only=True)``, YAML through ``yaml.safe_load``, ``.npy`` files without pickles."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from rmd_ray.data.readers import read_cifar_pickle


class _Payload:
    """Unpickling this calls ``os.system`` (what a crafted batch file would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _cifar10_root(tmp_path, poisoned: dict):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    good = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (root / name).write_bytes(pickle.dumps(poisoned if name == "data_batch_2" else good, protocol=2))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a", b"b"]}, protocol=2))
    return root


def test_a_crafted_cifar_batch_runs_nothing_and_names_the_file(tmp_path):
    marker = tmp_path / "pwned"
    root = _cifar10_root(tmp_path, {b"data": _Payload(marker), b"labels": [0, 1]})
    with pytest.raises(ValueError, match=r"cannot read CIFAR file .*data_batch_2.*refused global (posix|os)\.system"):
        read_cifar_pickle(root)
    assert not marker.exists()


def test_eval_and_builtins_are_refused_too(tmp_path):
    class Eval:
        def __reduce__(self):
            return eval, ("__import__('os').getpid()",)

    root = _cifar10_root(tmp_path, {b"data": Eval(), b"labels": [0, 1]})
    with pytest.raises(ValueError, match=r"refused global (__builtin__|builtins)\.eval"):
        read_cifar_pickle(root)


def test_real_numpy_batches_still_load(tmp_path):
    root = _cifar10_root(tmp_path, {b"data": np.full((2, 3072), 7, np.uint8), b"labels": [1, 0]})
    table = read_cifar_pickle(root)
    assert table.num_rows == 10
    assert table.column("label").to_pylist()[:4] == [0, 1, 1, 0]


def test_a_pickled_object_in_a_checkpoint_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    from rmd_ray.nn.engine import load_checkpoint
    from rmd_ray.nn.models import build_model

    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    torch.save({"model": _Payload(marker)}, path)
    with pytest.raises(ValueError) as info:
        load_checkpoint(path, model=build_model("resnet18", num_classes=2, cifar_stem=True, width=0.125))
    assert not marker.exists()
    assert "holds pickled Python objects" in str(info.value) and "weights-only" in str(info.value)


def test_yaml_tags_that_build_objects_are_refused(tmp_path):
    from rmd_ray.nn.search_space import load_search_space

    path = tmp_path / "space.yaml"
    path.write_text("name: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(Exception, match="python/object/apply"):
        load_search_space(path)
    assert not (tmp_path / "pwned").exists()


def test_every_np_load_and_torch_load_in_the_package_refuses_pickles():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "rmd_ray"
    for path in root.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if "np.load(" in code:
                assert "allow_pickle=False" in code, f"{path}:{number}"
            if "torch.load(" in code and "``" not in line:
                assert "weights_only=True" in code, f"{path}:{number}"
            assert "pickle.load(" not in code and "yaml.load(" not in code, f"{path}:{number}"
