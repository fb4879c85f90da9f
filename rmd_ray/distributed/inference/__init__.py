"""The batch-inference pipeline shared by scoring, prediction, OOD and shift: a source's shards are
read and decoded in Ray tasks, a pool of model actors runs the frozen model, and each part is written with
a completion record so that an interrupted run resumes."""
