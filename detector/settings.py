"""The detector's settings, declared once: ``python -m detector`` takes its defaults from here.

The statistics' defaults belong to :mod:`detector.stats` (``housing drift`` uses them without the service) and
the cool-down to :mod:`detector.retrain`; the fields below refer to them rather than repeat them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detector.retrain import DEFAULT_COOLDOWN
from detector.stats import (
    DEFAULT_BACKEND,
    DEFAULT_BINS,
    DEFAULT_CORRECTION,
    DEFAULT_P_VALUE,
    DEFAULT_THRESHOLD,
)
from serving.events import LOGGED_ENDPOINTS
from serving.policy import EVENTS

MIB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Window, join and label settings of the monitor (see ``python -m detector --help``)."""

    window_size: int = 200
    pending_ttl: float = 60.0
    max_pending_bytes: int = 16 * MIB
    """Memory of the events waiting for their partner (docs/detector.md, "Input limits"); the oldest beyond
    are evicted. The transformer sends a request and its response in one batch, so this is mostly empty."""
    max_pending_bytes_per_endpoint: int = 8 * MIB
    """... of them for one endpoint: a flood on one endpoint pushes out only its own oldest events."""
    max_recent_bytes: int = 8 * MIB
    """Memory of the predictions waiting for their label (and of labels waiting for a shadow's copy): about
    10,000 one-row requests; a label for a prediction pushed out is answered 404 and not archived."""
    endpoints: tuple[str, ...] = LOGGED_ENDPOINTS
    """The ``ce-endpoint`` values taken; events naming another are refused (400)."""
    max_model_versions: int = 8
    """Model versions tracked at once (their windows, labels, metric series); see ``model_version_idle``."""
    model_version_idle: float = 600.0
    """Seconds without an inference after which a tracked model version (never the reference's) may be
    forgotten to make room for a new one; until one is, inferences of a new version are refused (400)."""
    label_window: int = 100
    max_outcomes: int = 20_000
    min_labels: int = 30
    r2_threshold: float = 0.8
    estimated_mae_threshold: float = 0.0
    """Retrain when a window's estimated MAE (USD 1000s) exceeds this while fewer than ``min_labels`` labels
    are in; 0 (the default) turns it off. 3.0 is the quality gate's MAE (docs/detector.md)."""
    coverage_window: int = 500
    """Labelled predictions (with their intervals) over which ``housing_interval_coverage`` is computed, per
    key and level; the alert HousingIntervalCoverageLow judges a full window (docs/monitoring.md)."""


@dataclass(frozen=True)
class Config:
    """Everything the service needs, read once at start-up (see ``python -m detector --help``)."""

    storage_uri: str
    state_dir: Path
    settings: Settings = field(default_factory=Settings)
    threshold: float = DEFAULT_THRESHOLD
    p_value: float = DEFAULT_P_VALUE
    correction: str = DEFAULT_CORRECTION
    bins: int = DEFAULT_BINS
    stats_backend: str = DEFAULT_BACKEND
    """Where the KS and chi-squared tests come from: ``alibi-detect`` or ``scipy`` (same decisions)."""
    cooldown: float = DEFAULT_COOLDOWN
    retrain_min_labels: int = 0
    """Labels of a drifting key received since its episode began before the retrain fires (0: at once)."""
    flush_interval: float = 1.0
    retry_interval: float = 10.0
    max_body_bytes: int = EVENTS.body_bytes
    max_rows: int = EVENTS.rows or 0
    archive_uri: str | None = None
    """Where joined rows and labels are archived (Blob URL or local directory); ``None``: no archive."""
    archive_flush_rows: int = 10_000
    archive_flush_seconds: float = 60.0
    archive_max_wal_bytes: int = 512 * 1024 * 1024
    """The archive's write-ahead log kept at most while uploads fail (half the chart's 1Gi state volume)."""

    def drift_options(self) -> dict[str, Any]:
        """The keyword arguments of :class:`detector.stats.DriftTester` (the worker builds one too)."""
        return {
            "threshold": self.threshold,
            "p_value": self.p_value,
            "correction": self.correction,
            "bins": self.bins,
            "backend": self.stats_backend,
        }
