"""Who may read what: read key, user tokens scoped to their user, admin key, rate limits,
and no secret in the API's log or error bodies."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import jwt
import pytest
from pydantic import SecretStr

from api.deps import mint_user_token
from tests.conftest import OPEN_ROUTES, TOKEN_ROUTES, Stack, until

READ_KEY, SECRET = "reader-key-0123456789", "user-token-secret-0123456789-abcdefghij"


@pytest.fixture
def guarded(stack: Stack) -> Stack:
    stack.extra_env = {"read_api_key": READ_KEY, "user_token_secret": SECRET}
    stack.start_api()
    return stack


def bearer(user_id: str, ttl: float = 60.0) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_user_token(SecretStr(SECRET), user_id, ttl)}"}


@pytest.mark.parametrize("path", ["/api/recommendations?user_id=ann", "/api/users/ann/profile",
                                  "/api/users/ann/counts"])
def test_a_users_data_needs_that_users_token_or_the_read_key(guarded: Stack, path: str) -> None:
    api = guarded.api_url
    refused = httpx.get(api + path)
    assert (refused.status_code, refused.json()) == (401, {"detail": "missing X-API-Key header (read key required)"})
    other = httpx.get(api + path, headers=bearer("bob"))
    assert (other.status_code, other.json()) == (403, {"detail": "the bearer token belongs to another user"})
    expired = httpx.get(api + path, headers=bearer("ann", ttl=-10))
    assert (expired.status_code, expired.json()) == (401, {"detail": "user token expired"})
    forged = jwt.encode({"sub": "ann", "exp": 9_999_999_999}, "not-the-secret-but-just-as-long-0123456789", "HS256")
    bad = httpx.get(api + path, headers={"Authorization": f"Bearer {forged}"})
    assert (bad.status_code, bad.json()) == (401, {"detail": "invalid user token"})
    # The user's own token, and a backend holding the read key, get past authorization
    # (a user Eddy never saw is 200 cold start for the list, 404 for profile and counts).
    expected = 200 if path.startswith("/api/recommendations") else 404
    for headers in (bearer("ann"), {"X-API-Key": READ_KEY}):
        assert httpx.get(api + path, headers=headers).status_code == expected
    # A token opens its user's data and nothing else: the catalogue needs the read key.
    refused = httpx.get(api + "/api/items/nope", headers=bearer("bob"))
    assert (refused.status_code, refused.json()) == (401, {"detail": "missing X-API-Key header (read key required)"})


def test_no_secret_reaches_logs_or_error_bodies(guarded: Stack) -> None:
    api = guarded.api_url
    wrong = httpx.get(api + "/api/popular", headers={"X-API-Key": "guess-" + READ_KEY})
    assert wrong.status_code == 401 and READ_KEY not in wrong.text
    httpx.get(api + "/api/recommendations?user_id=ann", headers={"X-API-Key": READ_KEY})
    httpx.get(api + "/api/users/ann/profile", headers=bearer("ann"))
    log = (guarded.children.log_dir / "api.log").read_text()
    assert READ_KEY not in log and SECRET not in log and "Bearer" not in log


def test_rate_limit_per_caller(stack: Stack) -> None:
    stack.extra_env = {"rate_limit": "5/minute"}
    api = stack.start_api()
    codes = [httpx.get(api + "/api/popular", headers={"X-API-Key": "caller-a"}).status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]
    limited = httpx.get(api + "/api/popular", headers={"X-API-Key": "caller-a"})
    assert limited.json() == {"detail": "rate limit of 5 per 1 minute exceeded; retry later"}
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert httpx.get(api + "/api/popular", headers={"X-API-Key": "caller-b"}).status_code == 200  # per caller
    assert httpx.get(api + "/healthz").status_code == 200  # health checks are never limited
    # Limits sit in the routes' access checks; a route with two of them (the read key for
    # its router, the user's own access) still counts a request once.
    counts = [httpx.get(api + "/api/users/ann/counts", headers={"X-API-Key": "caller-c"}).status_code
              for _ in range(6)]
    assert counts == [404] * 5 + [429]
    recs = [httpx.get(api + "/api/recommendations?user_id=ann", headers={"X-API-Key": "caller-d"}).status_code
            for _ in range(6)]
    assert recs == [200] * 5 + [429]


def test_eddy_token_mints_a_token_for_one_user(stack: Stack) -> None:
    env = {**os.environ, **stack.env, "EDDY_USER_TOKEN_SECRET": SECRET}
    out = subprocess.run([sys.executable, "-m", "deploy.cli", "token", "ann", "--ttl", "60"], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    claims = jwt.decode(out, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "ann" and claims["exp"] - claims["iat"] == 60


ALLOWED, STRANGER = "https://ui.example", "https://evil.example"


def test_cors_answers_only_the_configured_origins(stack: Stack) -> None:
    stack.extra_env = {"cors_origins": ALLOWED}
    api = stack.start_api()
    preflight = {"Access-Control-Request-Method": "GET"}
    ok = httpx.options(api + "/api/popular", headers={"Origin": ALLOWED, **preflight})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ALLOWED
    refused = httpx.options(api + "/api/popular", headers={"Origin": STRANGER, **preflight})
    assert (refused.status_code, refused.text) == (400, "Disallowed CORS origin")
    assert "access-control-allow-origin" not in refused.headers
    simple = httpx.get(api + "/api/popular", headers={"Origin": STRANGER})
    assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers
    assert httpx.get(api + "/api/popular", headers={"Origin": ALLOWED}).headers["access-control-allow-origin"] == ALLOWED


def test_cors_is_off_by_default(stack: Stack) -> None:
    api = stack.start_api()
    resp = httpx.get(api + "/api/popular", headers={"Origin": STRANGER})
    assert resp.status_code == 200 and "access-control-allow-origin" not in resp.headers


PRODUCER_KEY, ADMIN_KEY = "producer-key-0123456789", "admin-key-0123456789"


def test_no_key_reaches_the_worker_or_api_logs_even_at_debug(stack: Stack) -> None:
    stack.extra_env = {"producer_api_key": PRODUCER_KEY, "admin_api_key": ADMIN_KEY, "read_api_key": READ_KEY,
                       "user_token_secret": SECRET}
    stack.start_worker()
    api = stack.start_api(EDDY_LOG_LEVEL="debug")
    event = {"type": "interaction", "event_id": "sec1", "user_id": "ann", "item_id": "i1", "action": "click"}
    refusals = [
        (httpx.post(api + "/api/events", json=event, headers={"X-API-Key": "x" + PRODUCER_KEY}),
         401, "invalid X-API-Key (producer key required)"),
        (httpx.post(api + "/api/events", json=event, headers={"X-API-Key": READ_KEY}),
         401, "invalid X-API-Key (producer key required)"),
        (httpx.post(api + "/api/strategies/d.org/pin", json={"strategy": "rss"}, headers={"X-API-Key": PRODUCER_KEY}),
         401, "invalid X-API-Key (admin key required)"),
        (httpx.get(api + "/api/popular", headers={"X-API-Key": ADMIN_KEY}),
         401, "invalid X-API-Key (read key required)"),
    ]
    for resp, status, detail in refusals:
        assert (resp.status_code, resp.json()) == (status, {"detail": detail})
        assert not any(secret in resp.text for secret in (PRODUCER_KEY, ADMIN_KEY, READ_KEY, SECRET))
    resp = httpx.post(api + "/api/events", json=event, headers={"X-API-Key": PRODUCER_KEY})
    assert resp.status_code == 202
    httpx.get(api + "/api/users/ann/profile", headers=bearer("ann"))
    stack.wait_applied("interactions", 1)
    logs = {path.name: path.read_text() for path in stack.children.log_dir.glob("*.log")}
    assert set(logs) == {"worker.log", "api.log"}
    for name, text in logs.items():
        for secret in (PRODUCER_KEY, ADMIN_KEY, READ_KEY, SECRET):
            assert secret not in text, f"a secret is in {name}"


def test_admin_endpoints_are_off_without_an_admin_key(stack: Stack) -> None:
    api = stack.start_api()
    resp = httpx.post(api + "/api/strategies/d.org/pin", json={"strategy": "rss"}, headers={"X-API-Key": "anything"})
    assert (resp.status_code, resp.json()) == (
        403, {"detail": "admin endpoints are disabled: set EDDY_ADMIN_API_KEY to enable them"})


def test_a_browser_app_on_an_allowed_origin_may_send_a_user_token(stack: Stack) -> None:
    """EDDY_CORS_ORIGINS as PRODUCTION.md writes it (a JSON list): the preflight of a request
    carrying a user token passes; another origin's does not."""
    api = stack.start_api(EDDY_CORS_ORIGINS='["https://app.example"]')
    ask = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    resp = httpx.options(api + "/api/recommendations/ann", headers={"Origin": "https://app.example", **ask})
    assert resp.status_code == 200, resp.text
    assert resp.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in resp.headers["access-control-allow-headers"].lower()
    resp = httpx.options(api + "/api/recommendations/ann", headers={"Origin": "https://evil.example", **ask})
    assert resp.status_code == 400


# What ann's token may open (tests/conftest.py: TOKEN_ROUTES), per route of the OpenAPI document: her own data. Every other
# route (including any added later and not listed here) must refuse her token with a 401.
PATH_VALUES = {"user_id": "ann", "item_id": "i1", "domain": "d.org", "bid_id": "b1", "name": "recommender",
               "version": "v1"}
QUERY_VALUES = {"user_id": "ann", "user_ids": "ann,bob"}


def _request(api: str, method: str, path: str, operation: dict, values: dict[str, str], headers: dict) -> httpx.Response:
    url = api + path.format(**{k: values.get(k, v) for k, v in PATH_VALUES.items()})
    params = {p["name"]: values.get(p["name"], QUERY_VALUES.get(p["name"], "x"))
              for p in operation.get("parameters", []) if p["in"] == "query" and p.get("required")}
    body = {} if "requestBody" in operation else None
    return httpx.request(method, url, params=params, json=body, headers=headers)


@pytest.fixture
def scoped(stack: Stack) -> Stack:
    stack.extra_env = {"read_api_key": READ_KEY, "user_token_secret": SECRET, "producer_api_key": PRODUCER_KEY,
                       "admin_api_key": ADMIN_KEY}
    stack.start_worker()
    stack.start_api()
    return stack


def test_a_user_token_opens_only_that_users_resources_on_every_route(scoped: Stack) -> None:
    api = scoped.api_url
    spec = httpx.get(api + "/openapi.json").json()
    routes = [(method.upper(), path, op) for path, ops in spec["paths"].items() for method, op in ops.items()]
    assert TOKEN_ROUTES | OPEN_ROUTES <= {(m, p) for m, p, _ in routes}  # the lists name real routes
    checked = 0
    for method, path, operation in routes:
        if (method, path) in OPEN_ROUTES:
            continue
        mine = _request(api, method, path, operation, {}, bearer("ann"))
        theirs = _request(api, method, path, operation, {"user_id": "carol", "user_ids": "bob,carol"}, bearer("ann"))
        if (method, path) in TOKEN_ROUTES:
            # Past authorization (a user Eddy never saw: 404 for profile and counts).
            assert mine.status_code in (200, 202, 404), (method, path, mine.status_code, mine.text)
            assert (theirs.status_code, theirs.json()) == (403, {"detail": "the bearer token belongs to another user"}), (
                method, path)
        else:
            assert mine.status_code == 401, (method, path, mine.status_code, mine.text)
            assert theirs.status_code == 401, (method, path, theirs.status_code)
        checked += 1
    assert checked == len(routes) - len(OPEN_ROUTES)


def test_a_member_token_sees_the_group_list_without_the_other_members_histories(scoped: Stack) -> None:
    api, producer = scoped.api_url, {"X-API-Key": PRODUCER_KEY}
    events = [{"type": "item", "event_id": f"gi{j}", "item_id": f"g{j}", "title": f"film {j}", "category": "film"}
              for j in range(6)]
    events += [{"type": "interaction", "event_id": f"g{who}{j}", "user_id": who, "item_id": f"g{j}", "action": "like"}
               for who, js in (("x1", (0, 1)), ("x2", (0, 1)), ("bob", (0,))) for j in js]
    assert httpx.post(api + "/api/events", json=events, headers=producer).status_code == 202

    def group_by_key() -> dict | None:
        doc = httpx.get(api + "/api/recommendations/group?user_ids=ann,bob", headers={"X-API-Key": READ_KEY}).json()
        return doc if any(i["reason"].startswith("for bob: ") for i in doc["items"]) else None  # bob's list is in

    by_key = until(group_by_key)
    assert by_key["cold_start_members"] == ["ann"]
    by_ann = httpx.get(api + "/api/recommendations/group?user_ids=ann,bob", headers=bearer("ann")).json()
    assert "cold_start_members" not in by_ann
    assert [i["item_id"] for i in by_ann["items"]] == [i["item_id"] for i in by_key["items"]]
    # Bob's reasons (his history, his tastes) become "for bob"; the rest is unchanged.
    assert [i["reason"] for i in by_ann["items"]] == [
        "for bob" if i["reason"].startswith("for bob: ") else i["reason"] for i in by_key["items"]]
    assert "for bob" in [i["reason"] for i in by_ann["items"]]


def test_a_user_forgets_themselves_with_their_own_token(scoped: Stack) -> None:
    api = scoped.api_url
    event = {"type": "interaction", "event_id": "fg1", "user_id": "ann", "item_id": "i1", "action": "click"}
    assert httpx.post(api + "/api/events", json=event, headers={"X-API-Key": PRODUCER_KEY}).status_code == 202
    until(lambda: httpx.get(api + "/api/users/ann/counts", headers=bearer("ann")).status_code == 200)
    assert httpx.delete(api + "/api/users/ann", headers=bearer("bob")).status_code == 403
    assert httpx.delete(api + "/api/users/ann").status_code == 401
    assert httpx.delete(api + "/api/users/ann", headers=bearer("ann")).status_code == 202
    until(lambda: httpx.get(api + "/api/users/ann/counts", headers=bearer("ann")).status_code == 404)
