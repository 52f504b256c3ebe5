"""The drift detector: KServe inference-logger CloudEvents in, drift and live-accuracy metrics out.

``python -m detector`` runs the service (see docs/detector.md); ``housing drift`` compares two CSV files with
the same statistics (:mod:`detector.stats`).
"""
