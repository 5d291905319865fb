"""The web app in a real headless Chromium (Debian's package, driven by Playwright) against
the real stack: liking one category through the feed shifts the list, forget me empties
the profile, the dashboard draws live figures, both pages fit a phone, and no page logs a
console error. A screenshot of each page goes to build/screenshots/.

Also the dashboard's JSON endpoint and the pages' security headers, over plain HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from api.routes.ui import CSP
from tests.conftest import Stack, post_events, until

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
T0 = 1_767_225_600.0
CATEGORIES = ("painting", "music", "film", "games")


@pytest.fixture
def api(stack: Stack) -> str:
    stack.start_worker()
    return stack.start_api()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed: `make install` installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Page:
    """A browser tab that records every console error and uncaught exception."""

    def __init__(self, browser: object, width: int, height: int) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _console(self, msg: object) -> None:
        if msg.type != "error":
            return
        # The model registry (GET /api/models) comes with issue 6: until it is merged the
        # dashboard gets a 404 there, shows "registry unavailable", and Chromium logs the
        # 404. That one line is expected; any other error fails the test.
        if "status of 404" in msg.text and msg.location.get("url", "").endswith("/api/models"):
            return
        self.errors.append(f"console: {msg.text} at {msg.location}")

    def close(self) -> None:
        self.context.close()


def catalogue() -> list[dict]:
    return [
        {"type": "item", "item_id": f"{c}-{i}", "title": f"{c.title()} open call {i}", "category": c,
         "tags": [c[:3]], "source": f"site{i % 3}.org", "ts": T0}
        for c in CATEGORIES for i in range(8)
    ]


def crowd() -> list[dict]:
    """Others make music, film and games popular; two fans of one painting make it barely
    popular, so a newcomer's list has little painting in it."""
    likes = [(f"crowd{n}", c, i) for c in ("music", "film", "games") for i in range(3) for n in range(6)]
    likes += [("fan0", "painting", 0), ("fan1", "painting", 0), ("fan2", "painting", 1)]
    return [
        {"type": "interaction", "user_id": user, "item_id": f"{c}-{i}", "action": "like", "ts": T0 + 10 + k}
        for k, (user, c, i) in enumerate(likes)
    ]


def painting_share(page: object) -> tuple[int, int]:
    cats = page.eval_on_selector_all("#recs li.item", "els => els.map(e => e.dataset.category)")
    return cats.count("painting"), len(cats)


def test_liking_one_category_in_the_feed_shifts_the_list_and_forget_me_clears_it(
    api: str, stack: Stack, browser: object
) -> None:
    post_events(api, catalogue())
    until(lambda: httpx.get(f"{api}/api/items/painting-7").status_code == 200)
    post_events(api, crowd())
    liked = {f"{c}-{i}" for c in ("music", "film", "games") for i in range(3)} | {"painting-0", "painting-1"}
    # The cold-start list has learned from the crowd once every liked item is in it.
    until(lambda: liked <= {e["item_id"] for e in httpx.get(f"{api}/api/popular", params={"k": 40}).json()["items"]})

    tab = Page(browser, 1280, 1000)
    page = tab.page
    page.set_default_timeout(10_000)
    page.goto(f"{api}/?user=zoe")
    page.wait_for_selector("#recs li.item")
    assert "cold start" in page.text_content("#status")
    before, shown = painting_share(page)
    assert (before, shown) == (1, 10), page.inner_text("#recs")  # painting-0, the least popular shown

    waits = []
    for _ in range(3):  # like painting items as the user sees them, one by one
        item = page.locator('#recs li.item[data-category="painting"]').first
        item_id = item.get_attribute("data-item-id")
        item.locator('button[data-action="like"]').click()
        page.wait_for_function(
            "id => document.querySelector('#status').textContent.includes('list updated')"
            " && !document.querySelector(`li[data-item-id='${id}']`)", arg=item_id, timeout=10_000)
        waits.append(float(page.text_content("#status").split("list updated in ")[1].removesuffix(" s")))
    after, shown = painting_share(page)
    # Half the list: painting fills all the diversity guard (EDDY_DIVERSITY_MAX_SHARE) lets it.
    assert (after, shown) == (5, 10), page.inner_text("#recs")
    # The page saw each new list within a second of the click (slack for a loaded CI machine).
    assert max(waits) < 2.0, waits
    reasons = page.eval_on_selector_all('#recs li.item[data-category="painting"] .reason', "els => els.map(e => e.textContent)")
    assert set(reasons) == {"matches your category painting"}

    # Dislike, hide and open: each goes out as what it is; a hidden item leaves the list at once.
    games = page.locator('#recs li.item[data-category="games"]').first
    games.locator('button[data-action="dislike"]').click()
    page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('dislike on')")
    hidden = page.locator("#recs li.item").last.get_attribute("data-item-id")
    page.locator("#recs li.item").last.locator('button[data-action="hide"]').click()
    page.wait_for_function("id => !document.querySelector(`li[data-item-id='${id}']`)", arg=hidden)
    page.locator("#recs li.item").first.locator("button.title").click()
    page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('click on')")
    until(lambda: httpx.get(f"{api}/api/users/zoe/counts").json()["counts"].get("click") == 1)
    counts = httpx.get(f"{api}/api/users/zoe/counts").json()["counts"]
    assert {a: counts[a] for a in ("like", "dislike", "hide", "click")} == {"like": 3, "dislike": 1, "hide": 1, "click": 1}
    # In Kafka, each action carries the list it was taken on and the item's place in it.
    zoe = [e for rec in stack.consume_all("interactions", idle_s=1.0) for e in orjson.loads(rec.value)["envelope"]
           if e["user_id"] == "zoe"]
    sent = [e for e in zoe if e["action"] != "impression"]
    assert [e["action"] for e in sent] == ["like", "like", "like", "dislike", "hide", "click"]
    assert all(len(e["rec_id"]) == 26 and 0 <= e["position"] < 10 for e in sent)
    # Impressions: once per item shown on this page, never repeated.
    shown_once = [e["item_id"] for e in zoe if e["action"] == "impression"]
    assert counts["impression"] == len(shown_once) == len(set(shown_once))
    page.wait_for_function("() => document.querySelector('#profile').textContent.includes('painting')")
    assert page.inner_text("#profile .bars li:first-child .bar-label") == "painting"
    page.locator("select[data-action=rate]").first.select_option("5")
    page.wait_for_function("() => document.querySelector('#rating-style')?.textContent.includes('generous')")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "feed.png", full_page=True)

    page.click("#forget")
    page.click("#forget-confirm")
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('forgotten')", timeout=10_000)
    assert page.inner_text("#profile") == "No interactions yet."
    assert httpx.get(f"{api}/api/users/zoe/profile").status_code == 404
    tab.close()
    assert tab.errors == []


def test_dashboard_reports_counts_lag_freshness_alerts_and_draws_them_live_on_desk_and_phone(
    api: str, stack: Stack, browser: object
) -> None:
    post_events(api, catalogue())
    post_events(api, crowd())
    stack.produce("alerts", [orjson.dumps({
        "type": "alert", "event_id": f"a{n}", "ts": T0 + n, "kind": "scrape_anomaly", "subject": "site1.org",
        "detail": f"shift {n}", "severity": "warning"}) for n in (1, 2, 2)], keys=[b"site1.org"] * 3)

    def settled() -> dict | None:
        doc = httpx.get(api + "/api/dashboard").json()
        done = doc["applied"].get("interactions") == len(crowd()) and doc["lag"].get("total") == 0
        published = doc["freshness"]["recommender_s"] is not None and doc["freshness"]["popular_s"] is not None
        return doc if done and published and len(doc["alerts"]) == 2 else None

    doc = until(settled)
    assert doc["applied"] == {"interactions": len(crowd()), "items": 32}
    assert doc["lag"]["group"] == stack.settings.consumer_group
    assert set(doc["lag"]["by_topic"]) == {"items", "interactions", "scrape-attempts", "bids"}
    # 4 inbound topics x 4 partitions, and Faust's one-partition leader topic.
    assert [w["partitions"] for w in doc["workers"]] == [17]
    assert 0 <= doc["freshness"]["recommender_s"] < 30 and 0 <= doc["freshness"]["popular_s"] < 30
    assert doc["freshness"]["bids_s"] is None  # no bid model published yet
    # Newest first, the repeated alert (same event_id, as a redelivery) shown once.
    assert doc["alerts"] == [
        {"ts": T0 + 2, "kind": "scrape_anomaly", "subject": "site1.org", "detail": "shift 2", "severity": "warning",
         "event_id": "a2"},
        {"ts": T0 + 1, "kind": "scrape_anomaly", "subject": "site1.org", "detail": "shift 1", "severity": "warning",
         "event_id": "a1"},
    ]

    stack.produce("alerts", [orjson.dumps({
        "type": "alert", "event_id": "shop.example:no_working_strategy:9", "ts": time.time(), "kind": "no_working_strategy",
        "subject": "shop.example", "detail": "every strategy of shop.example is failing", "severity": "critical",
    })], keys=[b"shop.example"])
    tab = Page(browser, 1280, 1000)
    page = tab.page
    page.goto(f"{api}/dashboard")
    # Traffic while the page watches: interactions, a domain whose strategy breaks, bids with outcomes.
    now = time.time()
    for second in range(4):
        batch = [{"type": "interaction", "user_id": f"u{n % 7}", "item_id": f"{CATEGORIES[n % 4]}-{n % 8}",
                  "action": "like" if n % 3 else "click", "ts": now + second} for n in range(40)]
        # html works, then breaks for good: five timeouts in a row switch the domain to rss.
        batch += [{"type": "scrape_attempt", "domain": "shop.example", "strategy": "rss" if n == 7 else "html",
                   "success": n == 7 or second < 2, "latency_ms": 120.0, "ts": now + second + n / 10,
                   "error_type": None if n == 7 or second < 2 else "timeout"} for n in range(8)]
        batch += [{"type": "bid", "bid_id": f"b{second}-{n}", "profile_id": f"p{n % 3}", "job_id": f"j{n}",
                   "job_title": "Data pipeline", "amount": 100 + n, "ts": now} for n in range(6)]
        batch += [{"type": "bid_outcome", "bid_id": f"b{second}-{n}", "won": n % 2 == 0, "ts": now + 1} for n in range(6)]
        post_events(api, batch)
        page.wait_for_timeout(1000)
    page.wait_for_function("() => document.querySelector('#rate-figures').textContent.includes('events/s')")
    page.wait_for_selector("#alerts li[data-kind=no_working_strategy]")
    page.wait_for_selector("#registry-unavailable, #models table[data-model]")
    page.wait_for_function("() => document.querySelectorAll('#strategy-table tr').length >= 2")
    page.wait_for_selector("#strategy-chart line.marker", state="attached")  # the switch, on the timeline
    assert page.text_content("#strategy-table").count("rss") == 1
    assert page.locator("#rate-chart svg polyline").count() >= 1
    assert page.inner_text("#workers").count(":") >= 1
    page.screenshot(path=SCREENSHOTS / "dashboard.png", full_page=True)
    tab.close()
    assert tab.errors == []

    # The model registry (issue 6) answers GET /api/models in the shape agreed for it; until
    # it is merged, the browser is given that answer here, and the admin calls are caught.
    registry = {"models": [{"name": "recommender", "serving": "v1", "versions": [
        {"version": "v1", "variant": "hybrid", "params": {}, "created_at": T0, "metrics": {"hr_at_10": 0.41},
         "serving": True, "role": "champion"},
        {"version": "v2", "variant": "hybrid", "params": {"k": 20}, "created_at": T0 + 60, "metrics": {"hr_at_10": 0.44},
         "serving": False, "role": "challenger"}]},
        {"name": "bids", "serving": "v1", "versions": [
            {"version": "v1", "variant": "logistic", "params": {}, "created_at": T0,
             "metrics": {"learned": 279, "auc": 0.8125, "updated_at": T0}, "serving": True, "role": "champion"}]}]}
    admin_calls: list[tuple[str, str, str | None]] = []

    def admin_route(route: object) -> None:
        req = route.request
        admin_calls.append((req.method, req.url.removeprefix(api), req.headers.get("x-api-key")))
        ok = req.url.endswith("/promote/v2")
        route.fulfill(status=200 if ok else 403, content_type="application/json",
                      body=orjson.dumps({"name": "recommender"} if ok else {"detail": "admin endpoints are disabled"}))

    tab = Page(browser, 1280, 1000)
    tab.page.route("**/api/models", lambda route: route.fulfill(status=200, content_type="application/json",
                                                                body=orjson.dumps(registry)))
    tab.page.route("**/api/models/recommender/*/**", admin_route)
    tab.page.route("**/api/models/recommender/rollback", admin_route)
    tab.page.goto(f"{api}/dashboard")
    tab.page.click("#keys summary")
    tab.page.fill("input[data-key=admin]", "admin-secret")
    tab.page.click("#keys button[type=submit]")
    tab.page.click("table[data-model=recommender] button:text('Promote')")
    tab.page.wait_for_function("() => document.querySelector('#models-status').textContent.includes('done')")
    assert tab.page.inner_text("#models-status") == "promote recommender v2: done"
    tab.page.click("button:text('Roll back recommender')")
    tab.page.wait_for_function("() => document.querySelector('#models-status').textContent.includes('refused')")
    assert tab.page.inner_text("#models-status") == "roll back recommender refused (403): admin endpoints are disabled"
    assert admin_calls == [("POST", "/api/models/recommender/promote/v2", "admin-secret"),
                           ("POST", "/api/models/recommender/rollback", "admin-secret")]
    rows = tab.page.eval_on_selector_all("table[data-model=recommender] tr", "rs => rs.map(r => r.className)")
    assert rows == ["", "serving", ""]
    # Counts read as counts and times as dates; one version has nothing to roll back to.
    bids = tab.page.inner_text("table[data-model=bids]")
    assert "learned 279," in bids and "auc 0.813" in bids and "279.000" not in bids and str(int(T0)) not in bids
    assert tab.page.locator("button:text('Roll back bids')").count() == 0
    tab.close()
    # Chromium logs the 403 the page was given; nothing else.
    assert [e for e in tab.errors if "status of 403" not in e] == []

    for path, name, ready in (("/?user=u1", "feed-phone", "#recs li.item"),
                              ("/dashboard", "dashboard-phone", "#rate-chart svg")):
        phone = Page(browser, 390, 844)
        phone.page.goto(api + path)
        phone.page.wait_for_selector(ready)
        phone.page.wait_for_timeout(1200)  # a second poll, so the charts have their lines
        overflow = phone.page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= 390, f"{name} is {overflow}px wide on a 390px screen"
        phone.page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)
        phone.close()
        assert phone.errors == []


def test_pages_carry_a_self_only_content_security_policy_and_the_dashboard_needs_the_read_key(stack: Stack) -> None:
    api = stack.start_api(EDDY_READ_API_KEY="read-secret")
    for path in ("/", "/dashboard", "/static/feed.js"):
        resp = httpx.get(api + path)
        assert resp.status_code == 200, path
        assert resp.headers["content-security-policy"] == CSP
        assert resp.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self';" in CSP and "frame-ancestors 'none'" in CSP
    assert httpx.get(api + "/").headers["content-type"].startswith("text/html")
    assert "javascript" in httpx.get(api + "/static/dashboard.js").headers["content-type"]
    assert httpx.get(api + "/static/missing.js").status_code == 404
    assert httpx.get(api + "/static/%2e%2e/routes/ui.py").status_code == 404
    resp = httpx.get(api + "/api/dashboard")
    assert resp.status_code == 401 and resp.json() == {"detail": "missing X-API-Key header (read key required)"}
    ok = httpx.get(api + "/api/dashboard", headers={"X-API-Key": "read-secret"})
    assert ok.status_code == 200 and ok.json()["applied"] == {} and ok.json()["alerts"] == []
