"""Out-of-distribution detection of a trained checkpoint: OOD sources predicted as Ray batch inference.

For each OOD source the checkpoint's model actors predict every row
(:func:`rmd_ray.distributed.prediction.predict.predict_source`, at the checkpoint's geometry: a 32-px CIFAR
image is resized to a 28-px Fashion-MNIST model's input); the in-distribution side is the run's
test predictions. A task reads both and returns :func:`rmd_ray.core.metrics.ood_report`: AUROC, AUPR
and FPR@95%TPR for MaxLogit, entropy and MSP, in-distribution samples as the positives (paper
Table 4). The driver sees only the reports.
"""

from __future__ import annotations

from typing import Any

import ray

from rmd_ray.distributed.prediction.predict import classifier_from_checkpoint, predict_source
from rmd_ray.distributed.sources.plan import ShardedSource, open_source
from rmd_ray.io import storage

__all__ = ["ood_eval"]


@ray.remote(num_cpus=0.5, scheduling_strategy="DEFAULT")
def _report(in_uri: str, out_uri: str) -> dict[str, Any]:
    from rmd_ray.core.metrics import ood_report
    from rmd_ray.evaluation.evaluate import load_predictions

    _, _, in_logits = load_predictions(in_uri)
    _, _, out_logits = load_predictions(out_uri)
    if in_logits.shape[1] != out_logits.shape[1]:
        raise ValueError(
            f"the in-distribution predictions have {in_logits.shape[1]} logits per row but the OOD ones "
            f"{out_logits.shape[1]}: they come from different models"
        )
    return {"n_in": int(len(in_logits)), "n_out": int(len(out_logits)), **ood_report(in_logits, out_logits)}


def ood_eval(
    checkpoint: str,
    in_predictions: str,
    ood_sources: dict[str, str | ShardedSource],
    *,
    output_dir: str,
    limit: int | None = None,
    batch_size: int = 256,
    use_gpu: bool = False,
) -> dict[str, dict[str, Any]]:
    """OOD reports of ``checkpoint`` against each source in ``ood_sources``.

    Parameters
    ----------
    checkpoint : str
        ``model.pt`` of a training run, or its checkpoint folder (any URI).
    in_predictions : str
        The run's in-distribution test predictions (``predictions_test.parquet/``).
    ood_sources : dict
        Name -> source spec (``sklearn-digits:``, ``parquet:...``, ...) or planned source.
    output_dir : str
        The OOD predictions go to ``<output_dir>/<name>.parquet/`` (any URI).
    limit : int, optional
        First ``limit`` rows of each spec source.

    Returns
    -------
    dict
        Name -> ``{"n_in", "n_out", "maxlogit": {...}, "entropy": {...}, "msp": {...}}``, each score
        with ``auroc``, ``aupr``, ``aupr_error``, ``fpr_at_95_tpr``.
    """
    if not ood_sources:
        raise ValueError("ood_sources is empty: pass NAME=SOURCE pairs, e.g. digits=sklearn-digits:")
    spec = classifier_from_checkpoint(checkpoint)
    reports = {}
    for name, source in ood_sources.items():
        planned = open_source(source, limit=limit) if isinstance(source, str) else source
        uri = predict_source(
            planned, spec, storage.join(output_dir, f"{name}.parquet"), batch_size=batch_size,
            gpus_per_actor=1.0 if use_gpu else 0.0, metadata={"split": f"ood:{name}", "source": planned.spec},
        )
        reports[name] = ray.get(_report.remote(in_predictions, uri))
    return reports
