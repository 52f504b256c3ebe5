"""The ``housing`` command line: one entry point for training, publishing, serving locally, drift and rollouts."""
