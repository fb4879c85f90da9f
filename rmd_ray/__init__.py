"""rmd-ray: learn sample difficulty from pre-trained models and train reliable classifiers.

Layers (each imports only the ones above it in this list):

- ``rmd_ray.core``: NumPy/CuPy statistics, scores, weights, metrics, configs (no torch, no ray).
- ``rmd_ray.nn`` and ``rmd_ray.data``: torch layer -- encoders, readers, losses, models, loops (no ray).
- ``rmd_ray.distributed``: Ray Data / Train / Tune.
- ``rmd_ray.cli``: the ``rmd-ray`` command line.
"""

__version__ = "0.1.0"
