"""Evaluation of trained classifiers and of difficulty scores (torch layer; no ray).

- :mod:`rmd_ray.evaluation.evaluate`: load predictions (deduplicated by id), all metrics, compare runs.
- :mod:`rmd_ray.evaluation.proxy`: the difficulty proxy test (paper Fig. 2).
- :mod:`rmd_ray.evaluation.corruption`: accuracy and ECE under on-the-fly ImageNet-C corruptions.
- :mod:`rmd_ray.evaluation.report`: a self-contained HTML report of all of the above.

Submodules are not imported here, so importing one does not pull in torch or matplotlib for the others.
"""
