"""Shared dependencies of the routes: settings, Redis, the Kafka producer, API keys."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader
from pydantic import SecretStr

from schemas.keys import Keys
from schemas.settings import Settings

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_redis(request: Request) -> Any:
    return request.app.state.redis


def get_keys(request: Request) -> Keys:
    return request.app.state.keys


def get_producer(request: Request) -> Any:
    return request.app.state.producer


def _check_key(expected: SecretStr | None, given: str | None, what: str) -> None:
    if expected is None:
        return
    if given is None:
        raise HTTPException(401, f"missing X-API-Key header ({what} key required)")
    # Constant-time compare so the key cannot be guessed byte by byte from timings.
    if not secrets.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise HTTPException(401, f"invalid X-API-Key ({what} key required)")


def require_producer_key(
    request: Request, key: Annotated[str | None, Security(api_key_header)]
) -> None:
    _check_key(request.app.state.settings.producer_api_key, key, "producer")


def require_read_key(request: Request, key: Annotated[str | None, Security(api_key_header)]) -> None:
    _check_key(request.app.state.settings.read_api_key, key, "read")


def require_admin_key(request: Request, key: Annotated[str | None, Security(api_key_header)]) -> None:
    """Admin endpoints change what Eddy does: without a configured admin key they are off."""
    expected = request.app.state.settings.admin_api_key
    if expected is None:
        raise HTTPException(403, "admin endpoints are disabled: set EDDY_ADMIN_API_KEY to enable them")
    _check_key(expected, key, "admin")


SettingsDep = Annotated[Settings, Depends(get_settings)]
RedisDep = Annotated[Any, Depends(get_redis)]
KeysDep = Annotated[Keys, Depends(get_keys)]
ProducerDep = Annotated[Any, Depends(get_producer)]
