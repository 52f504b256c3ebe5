"""The policy table is the whole surface: every route the servers register has its row, docs/security.md
renders the table as it is, and the detector's routes are the table's (in process, no server needed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from serving import policy
from tests.conftest import ROOT

DENIED = {("predictor", "/v1/models/{model_name}:explain")}
"""Routes KServe registers that a component's edge answers 404 on purpose (the predictor explains nothing)."""
FASTAPI_DOCS = {"/docs", "/docs/oauth2-redirect", "/redoc"}
"""FastAPI's documentation pages: KServe turns them off (``--enable_docs_url``); the edge would 404 them."""


def test_docs_security_md_renders_the_table_as_it_is() -> None:
    document = (ROOT / "docs" / "security.md").read_text()
    assert policy.render_into(document) == document, "run: python -m serving.policy --write docs/security.md"


def _routes(routes: list[Any]) -> list[tuple[str, frozenset[str]]]:
    found = []
    for route in routes:
        if hasattr(route, "path"):
            found.append((route.path, frozenset(getattr(route, "methods", None) or {"GET"})))
        else:  # FastAPI's included router
            found += _routes(route.original_router.routes)
    return found


def _registered(component: str) -> list[tuple[str, frozenset[str]]]:
    """What KServe's REST server, and our additions, register on a component's app."""
    from fastapi import FastAPI
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.rest.server import RESTServer

    from serving.listeners import ClosedRepositoryExtension

    app = FastAPI()
    if component == "predictor":
        from predictor.repository_api import add_repository_routes

        add_repository_routes(app, None)  # type: ignore[arg-type]
    if component == "transformer":
        from transformer.seed_api import seed_router

        app.include_router(seed_router(None, None))  # type: ignore[arg-type]
    repository = ModelRepository()
    RESTServer("app", DataPlane(repository), ClosedRepositoryExtension(repository), 1)._register_endpoints(
        app
    )
    return [(path, methods) for path, methods in _routes(app.routes) if path not in FASTAPI_DOCS]


@pytest.mark.parametrize("component", ["transformer", "predictor", "explainer"])
def test_every_route_a_kserve_server_registers_has_its_row(component: str) -> None:
    for path, methods in _registered(component):
        if (component, path) in DENIED:
            assert policy.lookup(component, _concrete(path)) is None
            continue
        row = policy.lookup(component, _concrete(path))
        assert row is not None, f"{component} {path}: no row in serving/policy.py (the edge answers 404)"
        assert methods - {"HEAD"} <= set(row.methods), (component, path, methods, row.methods)


def _concrete(path: str) -> str:
    return re.sub(r"\{model_version\}", "1", re.sub(r"\{model_name\}", "housing", path))


def test_the_detectors_app_serves_exactly_its_rows(tmp_path: Path) -> None:
    from detector.app import Detector, create_app
    from detector.settings import Config

    app = create_app(Detector(Config(storage_uri=str(tmp_path), state_dir=tmp_path), "none", None))
    served = {(path, methods - {"HEAD"}) for path, methods in _routes(app.routes)}
    rows = {(row.path, frozenset(row.methods)) for row in policy.DETECTOR}
    assert served == rows


def test_every_row_names_a_known_role_and_only_admin_rows_are_flagged() -> None:
    for component, routes in policy.ROUTES.items():
        for row in routes:
            assert row.role in policy.ROLES, (component, row.path)
            assert row.flag is None or row.role == policy.ADMIN, (component, row.path)
            assert row.rate_limited or row.role == policy.INGEST, (component, row.path)
            if row.limits.body_bytes == 0:
                assert row.methods == ("GET",), (component, row.path)


def test_row_limits_are_read_by_path() -> None:
    assert policy.rows_limit("transformer", "/v1/models/housing:predict") == 1000
    assert policy.rows_limit("transformer", "/predict") == 1
    assert policy.rows_limit("explainer", "/v1/models/housing:explain") == policy.EXPLAIN.rows
    assert policy.rows_limit("detector", "/feedback") == policy.LABELS.rows
    with pytest.raises(KeyError, match="not a route that carries rows"):
        policy.rows_limit("detector", "/status")
