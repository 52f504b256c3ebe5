"""What the servers share: KServe server additions, errors, metrics, logs, the inference-log contract.

The predictor and the transformer build on :mod:`serving.server`; the detector reads what
:mod:`serving.events` and :mod:`serving.payload` define; ``housing`` uses :mod:`serving.logs` and
:mod:`serving.kube`. This package imports no component and not ``housing`` (checked by the import contracts in
``pyproject.toml``), and only :mod:`serving.server`, :mod:`serving.errors` and :mod:`serving.metrics` need
KServe or prometheus-client, so the detector's and the trainer's images install neither through it.
"""
