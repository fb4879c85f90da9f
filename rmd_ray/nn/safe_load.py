"""Read a torch file with ``torch.load(weights_only=True)``, failing in one line that names the file.

torch's own error for a pickled object says "re-run with weights_only=False", which is exactly the
advice rmd-ray must not give: that runs whatever code the file carries. :func:`load_weights_only`
says instead what the file holds and which files rmd-ray reads.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import torch

__all__ = ["load_weights_only"]


def _refused_global(text: str) -> str | None:
    # torch names the class or function a pickle asked for; without one the bytes are just not a pickle
    for line in text.splitlines():
        if "GLOBAL" in line or "global" in line.lower().split("weights_only")[0]:
            return " ".join(line.split()).rstrip(".")
    return None


def load_weights_only(path: str | os.PathLike[str], *, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; a file it refuses or cannot read raises one-line ValueError.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file holds pickled Python objects (refused, never unpickled) or is not a readable torch
        file (truncated, corrupt, another format).
    """
    shown = os.fspath(path)
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
