"""The ``housing`` command line: training, publishing, the local stack, drift and rollouts."""
