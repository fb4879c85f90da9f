"""Prediction with a trained classifier on the inference pipeline: predictions, OOD detection and
corruption shift."""
