"""The Discord bot's commands and buttons against the real API, worker and broker.

Everything on the Discord side is discord.py's own: the interactions are built from the
payloads Discord sends, commands are dispatched by the real ``CommandTree`` (option
parsing, member resolution), and responses are serialised by discord.py. Only the one
method that would put bytes on the network to Discord, ``AsyncWebhookAdapter.request``,
is replaced: it records what would have been sent (no network to Discord exists here).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import discord
import httpx
import pytest
from discord.webhook.async_ import AsyncWebhookAdapter, async_context

from deploy.discord_bot import EddyApi, FeedbackView, QuickRateView, StarsView, build_tree
from tests.conftest import Stack, post_events, until

# The bot fixture's HTTP client lives on the session loop (asyncio_default_fixture_loop_scope):
# the tests must run on it too.
pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

T0 = 1_767_225_600.0
APP_ID = 900_000_000_000_000_001
ids = itertools.count(910_000_000_000_000_000)


class RecordingAdapter(AsyncWebhookAdapter):
    """discord.py's webhook adapter, minus the network: each request is recorded and
    answered as Discord answers an interaction callback."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[dict[str, Any]] = []

    async def request(self, route: Any, session: Any, *, payload: dict | None = None, **kwargs: Any) -> Any:
        message_id = next(ids)
        self.sent.append({"method": route.method, "path": route.path, "payload": payload, "message_id": message_id})
        return {"interaction": {"id": str(next(ids)), "type": (payload or {}).get("type", 4),
                                "response_message_id": str(message_id)}}


@pytest.fixture
def adapter() -> Iterator[RecordingAdapter]:
    recording = RecordingAdapter()
    token = async_context.set(recording)
    yield recording
    async_context.reset(token)


@pytest.fixture(scope="module")
def api(broker: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One deployment for the module (each test has its own Discord users): a worker costs
    seconds to join its group."""
    stack = Stack(broker, redis_url, tmp_path_factory.mktemp("discord"))
    try:
        yield _seeded(stack)
    finally:
        stack.close()


def _seeded(stack: Stack) -> str:
    stack.start_worker()
    api = stack.start_api()
    post_events(api, [
        {"type": "item", "item_id": f"{c}-{i}", "title": f"{c.title()} night {i}", "category": c, "ts": T0}
        for c in ("comedy", "horror", "drama") for i in range(4)
    ])
    post_events(api, [
        {"type": "interaction", "user_id": f"crowd{n}", "item_id": f"{c}-{i}", "action": "like", "ts": T0 + n}
        for n in range(3) for c in ("comedy", "horror") for i in range(3)
    ])
    liked = {f"{c}-{i}" for c in ("comedy", "horror") for i in range(3)}
    # The cold-start list has learned from the crowd's likes once it holds every liked item.
    until(lambda: liked <= {e["item_id"] for e in httpx.get(f"{api}/api/popular", params={"k": 12}).json()["items"]})
    return api


@pytest.fixture
async def bot(api: str) -> AsyncIterator[tuple[discord.Client, discord.app_commands.CommandTree, EddyApi]]:
    client = discord.Client(intents=discord.Intents.none())
    eddy = EddyApi(api)
    yield client, build_tree(client, eddy), eddy
    await eddy.close()


def user_payload(uid: int, name: str) -> dict[str, Any]:
    return {"id": str(uid), "username": name, "global_name": name.title(), "discriminator": "0", "avatar": None}


def interaction(client: discord.Client, user: dict[str, Any], data: dict[str, Any], *, kind: int = 2,
                message: dict | None = None) -> discord.Interaction:
    """An Interaction as discord.py builds it from Discord's INTERACTION_CREATE payload (in a DM)."""
    payload: dict[str, Any] = {
        "id": str(next(ids)), "application_id": str(APP_ID), "type": kind, "token": "interaction-token",
        "version": 1, "user": user, "data": data, "channel": {"id": "920000000000000001", "type": 1},
        "attachment_size_limit": 8_388_608, "locale": "en-GB",
    }
    if message is not None:
        payload["message"] = message
    return discord.Interaction(data=payload, state=client._connection)


def slash(client: discord.Client, user: dict, name: str, options: list | None = None,
          resolved: dict | None = None) -> discord.Interaction:
    data = {"id": str(next(ids)), "name": name, "type": 1, "options": options or []}
    if resolved:
        data["resolved"] = resolved
    return interaction(client, user, data)


def press(client: discord.Client, user: dict, custom_id: str, message_id: int) -> discord.Interaction:
    message = {"id": str(message_id), "channel_id": "920000000000000001", "author": user_payload(APP_ID, "eddy"),
               "content": "", "timestamp": "2026-01-01T00:00:00+00:00", "edited_timestamp": None, "tts": False,
               "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": [], "embeds": [],
               "pinned": False, "type": 0}
    return interaction(client, user, {"custom_id": custom_id, "component_type": 2}, kind=3, message=message)


async def run(tree: discord.app_commands.CommandTree, inter: discord.Interaction) -> None:
    # CommandTree._call is what discord.py runs for every INTERACTION_CREATE of a command.
    await tree._call(inter)
    assert not inter.command_failed


async def click(client: discord.Client, user: dict, reply: dict, label: str) -> bool:
    """Press the button labelled ``label`` on the message ``reply`` created, as discord.py
    dispatches it: the view stored for that message and custom_id, its interaction_check,
    then the button's callback (called directly, so an error fails the test)."""
    items = client._connection._view_store._views[reply["message_id"]]
    item = next(i for i in items.values() if i.label == label)
    inter = press(client, user, item.custom_id, reply["message_id"])
    if not await item.view.interaction_check(inter):
        return False
    await item.callback(inter)
    return True


def view_of(client: discord.Client, reply: dict) -> discord.ui.View:
    return next(iter(client._connection._view_store._views[reply["message_id"]].values())).view


def counts(api: str, user: str) -> dict[str, int]:
    resp = httpx.get(f"{api}/api/users/{user}/counts")
    return resp.json()["counts"] if resp.status_code == 200 else {}


def profile_of(api: str, user: str) -> dict[str, Any]:
    return httpx.get(f"{api}/api/users/{user}/profile").json()


ANN = user_payload(930_000_000_000_000_001, "ann")
BEN = user_payload(930_000_000_000_000_002, "ben")
CY = user_payload(930_000_000_000_000_003, "cy")
ANN_ID = f"discord:{ANN['id']}"


async def test_recommend_buttons_rate_and_my_stats_reach_eddy(api: str, bot: tuple, adapter: RecordingAdapter) -> None:
    client, tree, _ = bot
    cmd = slash(client, ANN, "recommend")
    await run(tree, cmd)
    reply = adapter.sent[-1]
    assert reply["path"] == "/interactions/{webhook_id}/{webhook_token}/callback"
    data = reply["payload"]["data"]
    assert reply["payload"]["type"] == 4 and data["flags"] == 64  # a channel message only Ann sees
    assert data["content"] == "New here: these are popular picks until Eddy learns your taste."
    assert data["embeds"][0]["title"] == "Your picks from Eddy"
    assert data["embeds"][0]["description"].count("\n**") == 4  # five items
    rows = data["components"]
    assert len(rows) == 5 and [b["label"] for b in rows[0]["components"]] == ["👍 1", "👎 1", "⭐ 1"]
    until(lambda: counts(api, ANN_ID).get("impression") == 5)

    view = view_of(client, reply)
    assert isinstance(view, FeedbackView)
    first, second = view.doc["items"][:2]
    assert await click(client, ANN, reply, "👍 1")
    edit = adapter.sent[-1]["payload"]
    assert edit["type"] == 7  # the message updated in place
    assert f"**1. {first['item']['title']}** 👍" in edit["data"]["embeds"][0]["description"]
    assert [b.get("disabled", False) for b in edit["data"]["components"][0]["components"]] == [True, True, False]
    until(lambda: counts(api, ANN_ID).get("like") == 1)

    assert await click(client, ANN, reply, "⭐ 2")
    stars_reply = adapter.sent[-1]
    assert stars_reply["payload"]["data"]["content"] == f"Rate **{second['item']['title']}**:"
    assert stars_reply["payload"]["data"]["flags"] == 64
    assert isinstance(view_of(client, stars_reply), StarsView)
    assert await click(client, ANN, stars_reply, "★★★★")
    assert adapter.sent[-1]["payload"]["data"]["content"] == f"You rated **{second['item']['title']}** ★★★★☆"
    until(lambda: counts(api, ANN_ID).get("rate") == 1)

    # Someone else pressing Ann's buttons is told so, and nothing is sent for them.
    assert await click(client, BEN, reply, "👎 3") is False
    assert adapter.sent[-1]["payload"]["data"] == {
        "content": "These buttons belong to someone else: run /recommend for your own list.", "flags": 64, "tts": False}
    assert counts(api, f"discord:{BEN['id']}") == {}

    until(lambda: httpx.get(f"{api}/api/users/{ANN_ID}/profile").json().get("interactions") == 2)
    await run(tree, slash(client, ANN, "my_stats"))
    embed = adapter.sent[-1]["payload"]["data"]["embeds"][0]
    assert embed["title"] == "What Eddy knows about Ann"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Interactions"] == "2 (like 1, rate 1)"
    assert fields["Rating style"] == "generous (mean 4.0★ over 1)"
    cats = {first["item"]["category"], second["item"]["category"]}
    assert set(fields["Favourite categories"].split("\n")) == (
        {f"{cats.pop()}: 2 liked of 2"} if len(cats) == 1 else {f"{c}: 1 liked of 1" for c in cats})


async def test_quick_rate_movie_night_and_forget_me(api: str, bot: tuple, adapter: RecordingAdapter) -> None:
    client, tree, _ = bot
    await run(tree, slash(client, BEN, "rate"))
    reply = adapter.sent[-1]
    assert reply["payload"]["data"]["content"].startswith("Quick rating 1/10: **")
    assert reply["payload"]["data"]["flags"] == 64 and isinstance(view_of(client, reply), QuickRateView)
    assert await click(client, BEN, reply, "★★★★★")
    assert adapter.sent[-1]["payload"]["data"]["content"].startswith("Quick rating 2/10: **")
    assert await click(client, BEN, reply, "Skip")
    assert await click(client, BEN, reply, "★★")
    assert adapter.sent[-1]["payload"]["data"]["content"].startswith("Quick rating 4/10: **")
    ben = f"discord:{BEN['id']}"
    until(lambda: counts(api, ben).get("rate") == 2)
    assert profile_of(api, ben)["rating_style"] == {"mean": 3.5, "ratings": 2, "style": "balanced"}

    # Cy (never seen) and Ben plan a movie night: one list, Cy flagged as new.
    await run(tree, slash(client, BEN, "movie_night", options=[{"name": "a", "type": 6, "value": CY["id"]}],
                          resolved={"users": {CY["id"]: CY}}))
    night = adapter.sent[-1]["payload"]["data"]
    assert night["embeds"][0]["title"] == "Movie night for Ben, Cy"
    assert night["embeds"][0]["description"].count("\n**") == 4
    assert night["embeds"][0]["footer"]["text"] == "1 of you are new to Eddy: their picks are the popular ones."
    assert "flags" not in night or night["flags"] == 0  # the group sees it
    await run(tree, slash(client, BEN, "movie_night", options=[{"name": "a", "type": 6, "value": BEN["id"]}],
                          resolved={"users": {BEN["id"]: BEN}}))
    assert adapter.sent[-1]["payload"]["data"]["content"] == (
        "Movie night needs at least one other person: /movie_night @friend.")

    await run(tree, slash(client, BEN, "forget_me"))
    assert adapter.sent[-1]["payload"]["data"]["content"] == (
        "Done: Eddy is deleting your interactions, profile and list; it will treat you as new.")
    until(lambda: httpx.get(f"{api}/api/users/{ben}/profile").status_code == 404)
    await run(tree, slash(client, BEN, "my_stats"))
    assert adapter.sent[-1]["payload"]["data"]["content"] == "Eddy doesn't know you yet: try /rate or /recommend."


async def test_an_unreachable_api_is_reported_to_the_user(adapter: RecordingAdapter) -> None:
    client = discord.Client(intents=discord.Intents.none())
    eddy = EddyApi("http://127.0.0.1:9", timeout_s=1.0)  # the discard port: nothing listens
    try:
        await run(build_tree(client, eddy), slash(client, ANN, "recommend"))
    finally:
        await eddy.close()
    assert adapter.sent[-1]["payload"]["data"] == {
        "content": "Eddy is not answering (ConnectError); try again in a moment.", "flags": 64, "tts": False}
