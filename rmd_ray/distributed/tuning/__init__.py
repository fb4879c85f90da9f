"""Ray Tune over the loss family, its hyper-parameters, the scorer backbone and the learning rate."""
