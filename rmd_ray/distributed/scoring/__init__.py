"""Scoring: embed a source (the inference pipeline), merge per-part sufficient statistics by a tree, fit
the Gaussians, score every part and publish ``scores.parquet``."""
