"""The distributed layer: Ray Data, Ray Train and Ray Tune around the torch layer, one folder per pipeline.

- :mod:`.runtime`: start or join Ray, route its output, dashboards.
- :mod:`.sources`: plan a source into shards on the driver; read them inside tasks; hold-out splits.
- :mod:`.inference`: the shared batch-inference pipeline (shards -> decode tasks -> model actors ->
  per-part outputs with completion records and resume).
- :mod:`.scoring`: embed -> per-part statistics, tree merge -> score -> ``scores.parquet``.
- :mod:`.training`: Ray Train with the difficulty-weighted loss.
- :mod:`.prediction`: predictions, OOD and corruption shift of a trained classifier, on the inference pipeline.
- :mod:`.tuning`: Ray Tune over losses, their hyper-parameters, the scorer backbone and the lr.
"""
