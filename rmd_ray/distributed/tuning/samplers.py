"""Optuna samplers that survive Ray Tune's pickling of its searcher.

Ray Tune pickles the searcher with the Tuner's state (``Tuner.__init__``) and in experiment
checkpoints. From optuna 5.1 the genetic samplers (``NSGAIISampler``, ``NSGAIIISampler``) hold a
``threading.Lock`` that pickle refuses ("cannot pickle '_thread.lock' object"). The lock only guards
the sampler's in-process generation cache, so a copy gets a fresh one.
"""

from __future__ import annotations

import threading
from typing import Any

import optuna

__all__ = ["PicklableNSGAIISampler"]


class PicklableNSGAIISampler(optuna.samplers.NSGAIISampler):
    """``optuna.samplers.NSGAIISampler`` whose lock (optuna >= 5.1) is recreated instead of pickled."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()  # unused before optuna 5.1


# optuna >= 4 names a GA sampler's study attributes after its class (__init_subclass__): keep NSGA-II's
for _key in ("_GENERATION_KEY", "_PARENT_CACHE_KEY_PREFIX"):
    if hasattr(optuna.samplers.NSGAIISampler, _key):
        setattr(PicklableNSGAIISampler, _key, getattr(optuna.samplers.NSGAIISampler, _key))
