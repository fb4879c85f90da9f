"""Initial weights from a local state dict (``--model-weights``): loaded exactly, a head of another size left at
its random init and named, pickles and other architectures refused in one line. No model hub is reached: every
checkpoint is saved here from a randomly initialised model."""

from __future__ import annotations

import pytest
import torch

from rmd_ray.nn.initial_weights import classifier_head, fit_initial_weights, load_initial_weights
from rmd_ray.nn.models import build_model
from rmd_ray.nn.safe_load import read_state_dict

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A randomly initialised ``timm:resnet18`` with a 10-class head, its state dict saved as .pt and .safetensors."""
    from safetensors.torch import save_file

    torch.manual_seed(123)
    model = build_model("timm:resnet18", num_classes=10)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    folder = tmp_path_factory.mktemp("weights")
    torch.save(state, folder / "r18.pth")
    save_file(state, str(folder / "r18.safetensors"))
    return state, folder


def _fresh(num_classes: int, name: str = "timm:resnet18"):
    torch.manual_seed(0)
    return build_model(name, num_classes=num_classes)


@pytest.mark.parametrize("file", ["r18.pth", "r18.safetensors"])
def test_loaded_weights_equal_the_saved_ones(saved, file):
    state, folder = saved
    model = _fresh(10)
    assert load_initial_weights(model, read_state_dict(folder / file), source=folder / file) == []
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_a_head_of_another_size_is_dropped_named_and_left_at_random_init(saved):
    state, folder = saved
    model = _fresh(3)
    head_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("fc.")}
    dropped = load_initial_weights(model, read_state_dict(folder / "r18.pth"), source="r18.pth")
    assert dropped == ["fc.weight (10x512 -> 3x512)", "fc.bias (10 -> 3)"]
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.startswith("fc."))
    assert all(torch.equal(loaded[k], v) for k, v in head_before.items())  # the random init, kept
    # a checkpoint saved without its head (a feature extractor) loads the same way
    headless = {k: v for k, v in state.items() if not k.startswith("fc.")}
    fitted, dropped = fit_initial_weights(_fresh(3), headless, source="headless.pth")
    assert dropped == ["fc.weight (absent -> 3x512)", "fc.bias (absent -> 3)"] and fitted.keys() == headless.keys()


def test_the_head_is_found_in_each_library():
    assert classifier_head(_fresh(3)) == "fc"
    assert classifier_head(build_model("torchvision:mobilenet_v3_small", num_classes=3)) == "classifier.3"
    assert classifier_head(build_model("timm:convnext_atto", num_classes=3)) == "head.fc"
    assert classifier_head(build_model("resnet18", num_classes=3, width=0.125)) == "fc"


def test_another_architecture_fails_naming_the_keys(saved):
    state, _ = saved
    with pytest.raises(ValueError, match=r"--model-weights 'r18.pth' does not fit model 'timm:resnet34': keys "
                                         r"missing from the checkpoint: layer1\.2\.conv1\.weight, .* and \d+ more; "
                                         r"save the state_dict of the same architecture"):
        fit_initial_weights(_fresh(10, "timm:resnet34"), state, source="r18.pth")
    renamed = {("backbone." + k if k.startswith("conv1") else k): v for k, v in state.items()}
    with pytest.raises(ValueError, match=r"missing from the checkpoint: conv1\.weight; not in the model: "
                                         r"backbone\.conv1\.weight;"):
        fit_initial_weights(_fresh(10), renamed, source="x.pth")
    wider = {**state, "conv1.weight": torch.zeros(64, 3, 3, 3)}
    with pytest.raises(ValueError, match=r"of other shapes: conv1\.weight \(64x3x3x3 vs 64x3x7x7\)"):
        fit_initial_weights(_fresh(10), wider, source="x.pth")


def test_a_pickled_file_is_refused_in_one_line(tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save(_fresh(3), path)  # the whole module pickled, not its state_dict
    with pytest.raises(ValueError, match=r"checkpoint '.*whole_model\.pt' holds pickled Python objects "
                                         r"\(Unsupported global: GLOBAL timm\.models\.resnet\.ResNet\); rmd-ray never "
                                         r"unpickles them .*torch\.save\(model\.state_dict\(\), PATH\)") as info:
        read_state_dict(path)
    assert "\n" not in str(info.value) and "add_safe_globals" not in str(info.value)


def test_files_that_hold_no_state_dict_say_so(tmp_path):
    listed = tmp_path / "list.pt"
    torch.save([1, 2], listed)
    with pytest.raises(ValueError, match=r"does not hold a state dict \(name -> tensor\): save one with torch.save"):
        read_state_dict(listed)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match=r"'.*broken\.safetensors' is not a readable \.safetensors file"):
        read_state_dict(broken)
    with pytest.raises(FileNotFoundError):
        read_state_dict(tmp_path / "absent.pth")


def test_a_state_dict_is_read_from_object_storage(tmp_path, s3_server):
    from safetensors.torch import save_file

    from rmd_ray.io import storage

    state = {"fc.weight": torch.randn(3, 4), "fc.bias": torch.randn(3)}  # small: the reading is under test
    torch.save(state, tmp_path / "w.pth")
    save_file(state, str(tmp_path / "w.safetensors"))
    bucket = s3_server.bucket("initial-weights")
    for name in ("w.pth", "w.safetensors"):
        uri = storage.join(bucket, name)  # ends in ?endpoint_override=...: the suffix is the path's
        storage.write_bytes_atomic(uri, (tmp_path / name).read_bytes())
        read = read_state_dict(uri)
        assert read.keys() == state.keys() and all(torch.equal(read[k], v) for k, v in state.items())
    with pytest.raises(FileNotFoundError):
        read_state_dict(storage.join(bucket, "absent.pth"))
