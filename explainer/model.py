"""The explainer: ``:explain`` answered with exact TreeSHAP contributions of the verified artifact's trees.

The shipped model predicts log(medv) with gradient-boosted trees and answers ``exp`` of it. ``shap``'s
``TreeExplainer`` computes, exactly for trees, each feature's contribution in the trees' output space:
``log_base + sum(log_contributions) == log(prediction)`` (to floating-point precision). In the units a
person reads the sum becomes a product: ``prediction = base_value * prod(factor)``, with
``base_value = exp(log_base)`` (USD 1000s, the model's typical price) and ``factor = exp(log_contribution)``
(1.13 means this feature's value raised this price by 13 %). A model without a log target (``gbr``)
explains additively in USD 1000s.

Input, V1 ``:explain``: ``{"instances": [...]}`` with named houses (``{"crim": ..., "lstat": ...}``, as the
transformer sends them after validating, extra keys such as ``b`` left out) or rows in the model's feature
order. Every answer names the model version and sha256 it explained: the artifact the predictor serves,
verified the same way before anything is unpickled (:mod:`serving.loading`). More than ``max_batch_rows``
houses (:data:`MAX_BATCH_ROWS` by default) are refused with a 400 before any is explained.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np
from kserve import Model
from kserve.errors import InvalidInput, ModelNotReady

from model import storage
from model.artifact import ModelArtifact, load_artifact
from model.importance import TreeModel, tree_model
from model.schema import TARGET_UNIT
from serving.payload import check_batch_rows, instance_rows
from serving.policy import rows_limit

MAX_BATCH_ROWS = rows_limit("explainer", "/v1/models/{name}:explain")
"""The most houses one ``:explain`` may hold (``--max_batch_rows``). Exact TreeSHAP costs about 200-270 us
a house here, some 20 times a prediction, and 4-5 kB of answer each (measured: 1,000 houses 0.26 s; 10,000
houses 2 s and 45 MB; 1,000,000 took 186 s and 7.1 GB): 1,000 is a quarter of a second, and the transformer's
default ``--max_batch_rows``, so every ``:explain`` it validates fits."""


class HousingExplainer(Model):
    """Explains the predictions of one verified artifact with exact TreeSHAP.

    Args:
        name: The model name in the endpoint paths (``housing``), the same as the predictor's.
        storage_uri: Where the artifact is (as the predictor's ``--storage_uri``).
        expected_sha256: The sha256 of ``model.joblib`` the deployment pins, if any.
        max_batch_rows: The most houses one request may hold; more get a 400.
    """

    def __init__(
        self,
        name: str,
        storage_uri: str,
        expected_sha256: str | None = None,
        max_batch_rows: int = MAX_BATCH_ROWS,
    ):
        super().__init__(name)
        self.storage_uri = storage_uri
        self.expected_sha256 = expected_sha256
        self.max_batch_rows = max_batch_rows
        self.artifact: ModelArtifact | None = None
        self._explainer: Any = None
        self._tree_model: TreeModel | None = None

    def load(self) -> bool:
        """Download, verify (before unpickling) and load the artifact; build the tree explainer.

        Raises:
            StorageError: Storage cannot be reached or holds no artifact.
            ArtifactError: The artifact fails its checks (nothing was unpickled).
        """
        import shap

        directory = storage.download(
            self.storage_uri,
            tempfile.mkdtemp(prefix="housing-explainer-") if storage.is_blob_url(self.storage_uri) else "",
            retry_total=0,
            connection_timeout=10,
        )
        artifact = load_artifact(directory, self.expected_sha256)
        self._tree_model = tree_model(artifact.pipeline)
        self._explainer = shap.TreeExplainer(self._tree_model.trees)
        self.artifact = artifact
        self.ready = True
        return self.ready

    def describe_loaded(self) -> str:
        """The artifact explained, for the log line that says the explainer is ready."""
        artifact = self._loaded()
        return f"explaining {self.name} version {artifact.version} sha256 {artifact.sha256}"

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        """Not a predictor: ``:predict`` goes to the predictor; this serves ``:explain``."""
        raise NotImplementedError("the explainer answers :explain; predictions come from the predictor")

    async def explain(self, payload: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
        """Each house's price decomposed into a base value and one contribution per feature."""
        artifact = self._loaded()
        rows = self._rows(payload, artifact.feature_names, self.max_batch_rows)
        tree = self._tree_model
        assert tree is not None
        contributions = np.asarray(
            self._explainer.shap_values(rows, check_additivity=False), dtype=np.float64
        )
        base = float(np.ravel(self._explainer.expected_value)[0])
        return {
            "model_name": self.name,
            "model_version": artifact.version,
            "sha256": artifact.sha256,
            "unit": TARGET_UNIT,
            "method": "TreeSHAP (exact), "
            + ("multiplicative: log target" if tree.log_target else "additive"),
            "explanations": [
                explanation(artifact.feature_names, row, phi, base, tree.log_target)
                for row, phi in zip(rows, contributions, strict=True)
            ],
        }

    def _loaded(self) -> ModelArtifact:
        if self.artifact is None:
            raise ModelNotReady(self.name, "the model is still loading")
        return self.artifact

    @staticmethod
    def _rows(payload: Any, features: list[str], max_rows: int) -> np.ndarray:
        instances = payload.get("instances") if isinstance(payload, Mapping) else None
        if not isinstance(instances, list) or not instances:
            raise InvalidInput('instances: expected {"instances": [house, ...]} with at least one house')
        try:
            check_batch_rows("instances", len(instances), max_rows)
        except ValueError as error:
            raise InvalidInput(str(error)) from None
        try:
            if all(isinstance(instance, Mapping) for instance in instances):
                rows = np.asarray(instance_rows(instances, features), dtype=np.float64)
            else:
                rows = np.asarray(instances, dtype=np.float64)
        except KeyError as missing:
            raise InvalidInput(f"instances: every house needs {missing.args[0]!r}") from None
        except (TypeError, ValueError) as error:
            raise InvalidInput(f"instances: every value must be a number ({error})") from None
        if rows.ndim != 2 or rows.shape[1] != len(features):
            raise InvalidInput(
                f"instances: rows of {len(features)} numbers in the order {', '.join(features)}"
            )
        if not np.isfinite(rows).all():
            raise InvalidInput("instances: every value must be a finite number (no NaN or infinity)")
        return rows


def explanation(
    features: list[str], row: np.ndarray, contributions: np.ndarray, base: float, log_target: bool
) -> dict[str, Any]:
    """One house's explanation, in the trees' output space and in USD 1000s.

    Args:
        features: The model's features, in ``row`` order.
        row: The house.
        contributions: TreeSHAP values for ``row``, in the trees' output space.
        base: The explainer's expected value (the trees' output for a typical house).
        log_target: The trees predict log(medv).
    """
    output = base + float(contributions.sum())
    by_feature = {}
    for name, value, phi in zip(features, row, contributions, strict=True):
        item = {"value": float(value), "contribution": float(phi)}
        if log_target:
            item["factor"] = math.exp(phi)
        by_feature[name] = item
    ranked = sorted(features, key=lambda name: abs(by_feature[name]["contribution"]), reverse=True)
    return {
        "prediction": math.exp(output) if log_target else output,
        "base_value": math.exp(base) if log_target else base,
        "output": output,
        "base_output": base,
        "contributions": by_feature,
        "ranked": ranked,
    }
