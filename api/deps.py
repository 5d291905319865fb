"""Shared dependencies of the routes: settings, Redis, the Kafka producer, API keys."""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from typing import Annotated, Any

import jwt
from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from limits import storage, strategies
from pydantic import SecretStr

from schemas.keys import Keys

# Every dependency is ``async def``: FastAPI runs a plain ``def`` dependency in its thread
# pool, a hop that cost about a third of GET /api/recommendations' throughput.
from schemas.settings import Settings

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
bearer = HTTPBearer(auto_error=False)
ApiKey = Annotated[str | None, Security(api_key_header)]
BearerToken = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_redis(request: Request) -> Any:
    return request.app.state.redis


async def get_keys(request: Request) -> Keys:
    return request.app.state.keys


async def get_producer(request: Request) -> Any:
    return request.app.state.producer


async def get_monitor(request: Request) -> Any:
    return request.app.state.monitor


def _check_key(expected: SecretStr | None, given: str | None, what: str) -> None:
    if expected is None:
        return
    if given is None:
        raise HTTPException(401, f"missing X-API-Key header ({what} key required)")
    if not _holds(expected, given):
        raise HTTPException(401, f"invalid X-API-Key ({what} key required)")


async def require_producer_key(
    request: Request,
    key: ApiKey,
    token: BearerToken,
) -> None:
    rate_limit(request, key, token)
    _check_key(request.app.state.settings.producer_api_key, key, "producer")


def _holds(expected: SecretStr | None, given: str | None) -> bool:
    # Constant-time compare so the key cannot be guessed byte by byte from timings.
    return (expected is not None and given is not None
            and secrets.compare_digest(given.encode(), expected.get_secret_value().encode()))


def user_claims(request: Request, token: HTTPAuthorizationCredentials | None) -> dict[str, Any] | None:
    """The claims of a valid user token (a JWT signed with ``EDDY_USER_TOKEN_SECRET``),
    None without one; 401 for a bad or expired token."""
    secret = request.app.state.settings.user_token_secret
    if secret is None or token is None:
        return None
    try:
        return jwt.decode(token.credentials, secret.get_secret_value(), algorithms=["HS256"],
                          options={"require": ["sub", "exp"]})
    except jwt.ExpiredSignatureError:
        raise HTTPException(401, "user token expired") from None
    except jwt.InvalidTokenError:
        raise HTTPException(401, "invalid user token") from None


async def require_read_key(
    request: Request,
    key: ApiKey,
    token: BearerToken,
) -> None:
    """Reads of anything but one user's own data need the read key when one is set. A user
    token does not stand in for it: a token opens its user's list, profile, counts and the
    group lists that include them, and nothing else."""
    rate_limit(request, key, token)
    _check_key(request.app.state.settings.read_api_key, key, "read")


async def require_user_access(
    request: Request,
    user_id: str,
    key: ApiKey,
    token: BearerToken,
) -> None:
    """A user's list, profile and counts: the read key or, with user tokens on
    (``EDDY_USER_TOKEN_SECRET``), that user's token; anyone else gets 401/403."""
    # One dependency rather than three (limit, read key, user): FastAPI's dependency
    # resolution, not the checks, is the largest cost of a cheap read.
    caller(request, key, token, users={user_id})


def credentials(request: Request) -> tuple[str | None, HTTPAuthorizationCredentials | None]:
    """The caller's X-API-Key and bearer token, read as ``ApiKey`` and ``BearerToken`` read
    them, for a route that checks access without FastAPI's dependency resolution."""
    headers = request.headers
    scheme, value = get_authorization_scheme_param(headers.get("authorization"))
    token = HTTPAuthorizationCredentials(scheme=scheme, credentials=value) if scheme.lower() == "bearer" and value else None
    return headers.get("x-api-key") or None, token


def caller(
    request: Request, key: str | None, token: HTTPAuthorizationCredentials | None, *, users: set[str],
    needs: str = "read",
) -> str | None:
    """Who may act on the data of ``users`` (callable from a route's body too): a holder of the ``needs`` key ("read" or
    "producer"), or, with user tokens on, the bearer of one of those users' tokens. Returns
    the token's user (None for a key holder, or where that key is not set: reads without
    user tokens, and producing, are then open); 401 or 403 otherwise."""
    rate_limit(request, key, token)
    settings = request.app.state.settings
    expected = settings.read_api_key if needs == "read" else settings.producer_api_key
    if _holds(expected, key):
        return None
    claims = user_claims(request, token)  # decoded once for both checks
    if claims is None:
        _check_key(expected, key, needs)
        if settings.user_token_secret is None or needs == "producer":
            return None
        raise HTTPException(401, "this user's data needs the user's bearer token")
    if claims["sub"] not in users:
        raise HTTPException(403, "the bearer token belongs to another user")
    return claims["sub"]


def mint_user_token(secret: SecretStr, user_id: str, ttl_s: float) -> str:
    """A user token for :func:`require_user_access` (what a UI backend hands its user)."""
    now = int(time.time())
    return jwt.encode({"sub": user_id, "iat": now, "exp": now + int(ttl_s)}, secret.get_secret_value(), "HS256")


_limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())


def rate_limit(request: Request, key: str | None, token: HTTPAuthorizationCredentials | None) -> None:
    """At most ``EDDY_RATE_LIMIT`` requests per caller (API key, user token, else address),
    in this API process; 429 with Retry-After beyond it.

    Every access check below calls it first, so each route pays one dependency for limit
    and keys together; a request is counted once however many checks its route has."""
    limit = request.app.state.rate_limit
    if limit is None or request.scope.get("eddy.limited"):
        return
    request.scope["eddy.limited"] = True
    if key is not None:  # a digest, so no key is kept in memory in clear
        who = "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]
    elif token is not None:
        who = "token:" + hashlib.sha256(token.credentials.encode()).hexdigest()[:16]
    else:
        who = "addr:" + (request.client.host if request.client else "unknown")
    if not _limiter.hit(limit, who):
        reset = _limiter.get_window_stats(limit, who).reset_time
        raise HTTPException(429, f"rate limit of {limit} exceeded; retry later",
                            headers={"Retry-After": str(max(1, math.ceil(reset - time.time())))})


async def require_forget_access(
    request: Request,
    user_id: str,
    key: ApiKey,
    token: BearerToken,
) -> None:
    """Forgetting a user: the producer key (what may write events may write this one), or
    the user's own token, so that a user can forget themselves."""
    caller(request, key, token, users={user_id}, needs="producer")


async def require_admin_key(
    request: Request,
    key: ApiKey,
    token: BearerToken,
) -> None:
    """Admin endpoints change what Eddy does: without a configured admin key they are off."""
    rate_limit(request, key, token)
    expected = request.app.state.settings.admin_api_key
    if expected is None:
        raise HTTPException(403, "admin endpoints are disabled: set EDDY_ADMIN_API_KEY to enable them")
    _check_key(expected, key, "admin")


SettingsDep = Annotated[Settings, Depends(get_settings)]
RedisDep = Annotated[Any, Depends(get_redis)]
KeysDep = Annotated[Keys, Depends(get_keys)]
ProducerDep = Annotated[Any, Depends(get_producer)]
MonitorDep = Annotated[Any, Depends(get_monitor)]
