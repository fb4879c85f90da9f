"""Read a torch file with ``torch.load(weights_only=True)``, failing in one line that names the file.

torch's own error for a pickled object says "re-run with weights_only=False", which is exactly the
advice rmd-ray must not give: that runs whatever code the file carries. :func:`load_weights_only`
says instead what the file holds and which files rmd-ray reads; :func:`read_state_dict` reads a
state dict (torch or ``.safetensors``, a local path or any storage URI) through it.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import Any, BinaryIO
from urllib.parse import urlparse

import torch

from rmd_ray.io import storage

__all__ = ["load_weights_only", "read_state_dict"]


def _refused_global(text: str) -> str | None:
    # torch names the class or function a pickle asked for; without one the bytes are just not a pickle
    for line in text.splitlines():
        if "GLOBAL" in line or "global" in line.lower().split("weights_only")[0]:
            # the class named, without torch's advice on allow-listing it (that would unpickle it)
            line = line.split(" was not an allowed global")[0].split("WeightsUnpickler error:")[-1]
            return " ".join(line.split()).rstrip(".")
    return None


def load_weights_only(
    path: str | os.PathLike[str] | BinaryIO, *, map_location: Any = "cpu", name: str | None = None
) -> Any:
    """``torch.load(path, weights_only=True)``; a file it refuses or cannot read raises one-line ValueError.

    ``path`` may also be an open binary file (bytes read from a URI); ``name`` is then what the
    messages call it (default: ``path`` itself).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file holds pickled Python objects (refused, never unpickled) or is not a readable torch
        file (truncated, corrupt, another format).
    """
    shown = name if name is not None else os.fspath(path)  # type: ignore[arg-type]
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as err:
        refused = _refused_global(str(err))
        if refused is None:
            after = str(err).split("WeightsUnpickler error:")[-1]
            detail = next((line.strip() for line in after.splitlines() if line.strip()), "not a pickle")
            raise ValueError(
                f"checkpoint {shown!r} is not a readable torch file ({detail[:120]}): it is "
                "truncated, corrupt or another format; write it again with torch.save"
            ) from err
        raise ValueError(
            f"checkpoint {shown!r} holds pickled Python objects ({refused}); rmd-ray never "
            "unpickles them (that can run code) and loads only weights-only checkpoints: ones rmd-ray wrote, "
            "or torch.save(model.state_dict(), PATH)"
        ) from err
    except (RuntimeError, EOFError, KeyError, OSError, ValueError) as err:
        raise ValueError(
            f"checkpoint {shown!r} is not a readable torch file ({_first(err)}): it is truncated, corrupt or "
            "another format; write it again with torch.save"
        ) from err


def _first(err: BaseException) -> str:
    text = " ".join(str(err).split(". ")[0].split())
    return f"{type(err).__name__}: {text}"[:200]


def read_state_dict(uri: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensor dict (name -> tensor, on the CPU) in a ``.safetensors`` or torch file.

    ``uri`` is a local path or a storage URI (``s3://...``, read through :mod:`rmd_ray.io.storage`).
    Torch files go through :func:`load_weights_only` (pickled objects refused); a dict holding its
    tensors under ``state_dict`` or ``model`` (an rmd-ray checkpoint) is unwrapped, and so is the
    ``module.`` prefix ``DataParallel`` / DDP add to every key.

    Raises
    ------
    FileNotFoundError
        ``uri`` does not exist (locally or in its store).
    ValueError
        Pickled objects, a corrupt file, no state dict inside, or ``.safetensors`` without the
        safetensors package.
    """
    shown = os.fspath(uri)
    remote = storage.is_remote(shown)
    if remote and not storage.is_file(shown):
        raise FileNotFoundError(2, "No such file", shown)
    if (urlparse(shown).path if remote else shown).endswith(".safetensors"):  # a URI may end in ?endpoint=...
        obj: Any = _read_safetensors(shown, remote=remote)
    elif remote:
        obj = load_weights_only(io.BytesIO(storage.read_bytes(shown)), name=shown)
    else:
        obj = load_weights_only(shown)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"checkpoint {shown!r} does not hold a state dict (name -> tensor): save one with "
            "torch.save(model.state_dict(), PATH)"
        )
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _read_safetensors(uri: str, *, remote: bool) -> dict[str, torch.Tensor]:
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load, load_file
    except ImportError:
        raise ValueError(f"checkpoint {uri!r} is a .safetensors file: pip install safetensors") from None
    try:
        return load(storage.read_bytes(uri)) if remote else load_file(uri, device="cpu")
    except SafetensorError as err:
        raise ValueError(
            f"checkpoint {uri!r} is not a readable .safetensors file ({_first(err)}): it is truncated or corrupt"
        ) from err
