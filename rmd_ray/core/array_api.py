"""The one NumPy/CuPy switch: every core function takes its array module from its inputs.

CuPy is optional (``pip install rmd-ray[gpu]``). ``cupy.is_available()`` returns False without raising on a
machine with no GPU, so importing this module never fails and NumPy is used there.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

try:  # pragma: no cover - depends on the machine
    import cupy as _cupy

    _CUPY_OK = bool(_cupy.is_available())
except Exception:  # ImportError, or a CUDA driver error raised by a broken install
    _cupy = None
    _CUPY_OK = False


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    return _CUPY_OK


def array_module(*arrays: Any) -> ModuleType:
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``."""
    if _cupy is not None:
        for a in arrays:
            if isinstance(a, _cupy.ndarray):
                return _cupy
    return np


def module_for_device(device: str) -> ModuleType:
    """Array module for ``device`` in {"cpu", "cuda", "auto"}.

    ``"auto"`` picks CuPy when a GPU is visible and NumPy otherwise.
    """
    if device == "cpu":
        return np
    if device in ("cuda", "gpu"):
        if not _CUPY_OK:
            raise ValueError(
                "device='cuda' needs CuPy and a visible GPU: install rmd-ray[gpu] on a GPU machine, "
                "or pass device='cpu' (or 'auto')"
            )
        return _cupy
    if device == "auto":
        return _cupy if _CUPY_OK else np
    raise ValueError(f"unknown device {device!r}; valid: 'cpu', 'cuda', 'auto'")


def to_numpy(a: Any) -> np.ndarray:
    """Copy a CuPy array to host; NumPy arrays pass through unchanged."""
    if _cupy is not None and isinstance(a, _cupy.ndarray):
        return _cupy.asnumpy(a)
    return np.asarray(a)
