"""The V2 repository extension's REST routes over :class:`predictor.repository.ArtifactRepository`.

KServe registers ``POST /v2/repository/models/{name}/load`` and ``/unload`` itself, but its load takes no
body and answers every failure with a 503. These routes, registered before KServe's on the same app, take
the extension's optional body (``{"parameters": {"champion": true}}`` makes the model the champion), load
in a worker thread (a download and a model parse never stall the requests being served), and answer a
refusal with its own status: 404 unknown, 403 unpinned, 409 artifact fails its checks, 400 malformed call,
503 storage unreachable. ``GET`` or ``POST /v2/repository/index`` lists every pinned model and the alias.

The routes are served only with ``--enable_repository_api`` (the edge answers 404 otherwise), need the
``admin`` role with ``--auth`` (serving/policy.py), and never take down what ``housing`` serves: unloading the
alias or the model it resolves to is refused with 409 until another model is made the champion (a load
with ``{"parameters": {"champion": true}}``). The gRPC repository calls are refused
(:mod:`serving.listeners`): gRPC checks no credential.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from predictor.repository import ArtifactRepository, RepositoryError
from serving.inputs import parse_json

CHAMPION = "champion"
ENABLE_FLAG = "--enable_repository_api"


def add_repository_routes(app: FastAPI, repository: ArtifactRepository) -> None:
    """Register the load, unload and index routes (before KServe registers its own)."""

    async def load(model_name: str, request: Request) -> dict[str, Any]:
        champion = _champion_parameter(await request.body())
        await asyncio.to_thread(repository.load, model_name, champion)
        model = repository.get_model(model_name)
        artifact = getattr(model, "artifact", None)
        return {
            "name": model_name,
            "load": True,
            "version": artifact.version if artifact is not None else "",
            "champion": repository.champion == model_name,
        }

    async def unload(model_name: str) -> dict[str, Any]:
        if model_name in (repository.alias, repository.champion):
            raise RepositoryError(
                409,
                f"refusing to unload {model_name}: {repository.alias} resolves to it; make another model "
                f'the champion first (load it with {{"parameters": {{"{CHAMPION}": true}}}})',
            )
        try:
            repository.unload(model_name)
        except KeyError:
            raise RepositoryError(404, f"no model is served under the name {model_name}") from None
        return {"name": model_name, "unload": True}

    async def index() -> list[dict[str, Any]]:
        return repository.index()

    app.add_exception_handler(RepositoryError, _refused)
    app.add_api_route("/v2/repository/models/{model_name}/load", load, methods=["POST"])
    app.add_api_route("/v2/repository/models/{model_name}/unload", unload, methods=["POST"])
    app.add_api_route("/v2/repository/index", index, methods=["GET", "POST"])


def _champion_parameter(body: bytes) -> bool:
    """``parameters.champion`` of a load request's body (empty, or ``{}`` as KServe's model agent sends)."""
    if not body.strip():
        return False
    try:
        document = parse_json(body)  # the servers' one rule: also a 400 for JSON nested too deeply
    except ValueError as error:
        raise RepositoryError(400, f"load request {error}") from None
    parameters = document.get("parameters", {}) if isinstance(document, dict) else None
    if not isinstance(parameters, dict):
        raise RepositoryError(400, "load request: parameters must be an object")
    champion = parameters.get(CHAMPION, False)
    if not isinstance(champion, bool):
        raise RepositoryError(400, f"load request: parameters.{CHAMPION} must be true or false")
    return champion


async def _refused(_: Request, error: Exception) -> JSONResponse:
    status = error.status if isinstance(error, RepositoryError) else 500
    return JSONResponse(status_code=status, content={"error": str(error)})
