"""Eddy on Discord: a bot that is one more producer and reader of the Eddy HTTP API.

Slash commands: ``/recommend`` (the user's list, with 👍 / 👎 / rate buttons that send
interaction events carrying the list's ``rec_id`` and the item's position), ``/rate``
(quick star ratings of popular items, one after another), ``/my_stats`` (the profile),
``/forget_me`` and ``/movie_night @a @b`` (one list for the group). A Discord user is
Eddy user ``discord:<user id>``.

The bot talks to Eddy only over HTTP (``EDDY_DISCORD_API_URL``), with the producer and
read keys when they are set, so it runs anywhere the API is reachable and every check
the API makes applies to it as to any client.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
import httpx
from discord import app_commands

from schemas.settings import Settings

log = logging.getLogger(__name__)

LIST_SIZE = 5  # one row of buttons per item, and Discord allows five rows
STARS = (1, 2, 3, 4, 5)


class BotNotConfigured(RuntimeError):
    """The bot cannot start: the reason is for the operator."""


class EddyUnavailable(RuntimeError):
    """The Eddy API refused or did not answer; the message is safe to show a user."""


def eddy_user(user: discord.abc.User) -> str:
    return f"discord:{user.id}"


class EddyApi:
    """The calls the bot makes to the Eddy API (httpx, one connection pool)."""

    def __init__(self, base_url: str, *, producer_key: str | None = None, read_key: str | None = None,
                 timeout_s: float = 5.0) -> None:
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s)
        self._read = {"X-API-Key": read_key} if read_key else {}
        self._produce = {"X-API-Key": producer_key} if producer_key else {}

    @classmethod
    def from_settings(cls, settings: Settings) -> EddyApi:
        def secret(value: Any) -> str | None:
            return value.get_secret_value() if value is not None else None

        return cls(settings.discord_api_url, producer_key=secret(settings.producer_api_key),
                   read_key=secret(settings.read_api_key))

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kw: Any) -> httpx.Response:
        try:
            resp = await self._client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise EddyUnavailable(f"Eddy is not answering ({type(exc).__name__}); try again in a moment.") from exc
        if resp.status_code not in ok:
            log.warning("Eddy API %s %s answered %s: %s", method, path, resp.status_code, resp.text[:300])
            raise EddyUnavailable(f"Eddy could not do that right now (HTTP {resp.status_code}).")
        return resp

    async def recommendations(self, user_id: str, k: int = LIST_SIZE) -> dict[str, Any]:
        resp = await self._call("GET", "/api/recommendations", params={"user_id": user_id, "k": k}, headers=self._read)
        return resp.json()

    async def group(self, user_ids: list[str], k: int = LIST_SIZE) -> dict[str, Any]:
        resp = await self._call("GET", "/api/recommendations/group", params={"user_ids": ",".join(user_ids), "k": k},
                                headers=self._read)
        return resp.json()

    async def popular(self, k: int = 10) -> list[dict[str, Any]]:
        resp = await self._call("GET", "/api/popular", params={"k": k}, headers=self._read)
        return resp.json()["items"]

    async def profile(self, user_id: str) -> dict[str, Any] | None:
        resp = await self._call("GET", f"/api/users/{user_id}/profile", ok=(200, 404), headers=self._read)
        return resp.json() if resp.status_code == 200 else None

    async def send(self, events: list[dict[str, Any]]) -> None:
        await self._call("POST", "/api/events", ok=(202,), json=events, headers=self._produce)

    async def forget(self, user_id: str) -> None:
        await self._call("DELETE", f"/api/users/{user_id}", ok=(202,), headers=self._produce)


def interaction_event(user_id: str, item_id: str, action: str, *, value: float | None = None,
                      rec_id: str | None = None, position: int | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "interaction", "user_id": user_id, "item_id": item_id, "action": action}
    for name, v in (("value", value), ("rec_id", rec_id), ("position", position)):
        if v is not None:
            event[name] = v
    return event


def title_of(entry: dict[str, Any]) -> str:
    return (entry.get("item") or {}).get("title") or entry["item_id"]


def list_embed(title: str, entries: list[dict[str, Any]], marks: dict[int, str] | None = None) -> discord.Embed:
    marks = marks or {}
    embed = discord.Embed(title=title, colour=discord.Colour.blue())
    lines = []
    for n, e in enumerate(entries):
        item = e.get("item") or {}
        details = " · ".join(x for x in (item.get("category"), e.get("reason"), f"score {e['score']:.2f}") if x)
        mark = f" {marks[n]}" if n in marks else ""
        lines.append(f"**{n + 1}. {title_of(e)}**{mark}\n{details}")
    embed.description = "\n".join(lines) or "Nothing to recommend yet: send a few ratings with /rate."
    return embed


class OwnedView(discord.ui.View):
    """A view only the user it was made for may press: another user's 👍 is not theirs."""

    def __init__(self, owner: discord.abc.User, *, timeout: float | None = 15 * 60) -> None:
        super().__init__(timeout=timeout)
        self.owner_id = owner.id

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id == self.owner_id:
            return True
        await interaction.response.send_message("These buttons belong to someone else: run /recommend for your own list.",
                                                ephemeral=True)
        return False


class FeedbackView(OwnedView):
    """/recommend: per item 👍, 👎 and ⭐ (rate), each sent as an interaction event."""

    def __init__(self, api: EddyApi, owner: discord.abc.User, doc: dict[str, Any]) -> None:
        super().__init__(owner)
        self.api = api
        self.user_id = eddy_user(owner)
        self.doc = doc
        self.marks: dict[int, str] = {}
        for n, _entry in enumerate(doc["items"][:LIST_SIZE]):
            for action, label, style in (("like", "👍", discord.ButtonStyle.success),
                                         ("dislike", "👎", discord.ButtonStyle.danger),
                                         ("rate", "⭐", discord.ButtonStyle.secondary)):
                button: discord.ui.Button = discord.ui.Button(label=f"{label} {n + 1}", style=style, row=n,
                                                              custom_id=f"eddy:{action}:{doc['rec_id']}:{n}")
                button.callback = self._make_callback(action, n)
                self.add_item(button)

    def _make_callback(self, action: str, n: int) -> Any:
        async def callback(interaction: discord.Interaction) -> None:
            entry = self.doc["items"][n]
            if action == "rate":
                view = StarsView(self.api, interaction.user, entry, rec_id=self.doc["rec_id"])
                await interaction.response.send_message(f"Rate **{title_of(entry)}**:", view=view, ephemeral=True)
                return
            try:
                await self.api.send([interaction_event(self.user_id, entry["item_id"], action,
                                                       rec_id=self.doc["rec_id"], position=entry["position"])])
            except EddyUnavailable as exc:
                await interaction.response.send_message(str(exc), ephemeral=True)
                return
            self.marks[n] = "👍" if action == "like" else "👎"
            for child in self.children:  # one opinion per item
                if isinstance(child, discord.ui.Button) and child.row == n and not child.label.startswith("⭐"):
                    child.disabled = True
            await interaction.response.edit_message(embed=self.embed(), view=self)

        return callback

    def embed(self) -> discord.Embed:
        return list_embed("Your picks from Eddy", self.doc["items"][:LIST_SIZE], self.marks)


class StarsView(OwnedView):
    """1★ to 5★ for one item: a ``rate`` interaction with that value."""

    def __init__(self, api: EddyApi, owner: discord.abc.User, entry: dict[str, Any], *,
                 rec_id: str | None = None) -> None:
        super().__init__(owner)
        self.api, self.entry, self.rec_id = api, entry, rec_id
        self.user_id = eddy_user(owner)
        for stars in STARS:
            button: discord.ui.Button = discord.ui.Button(label="★" * stars, custom_id=f"eddy:stars:{stars}")
            button.callback = self._make_callback(stars)
            self.add_item(button)

    def _make_callback(self, stars: int) -> Any:
        async def callback(interaction: discord.Interaction) -> None:
            try:
                await self.api.send([interaction_event(self.user_id, self.entry["item_id"], "rate", value=stars,
                                                       rec_id=self.rec_id, position=self.entry.get("position"))])
            except EddyUnavailable as exc:
                await interaction.response.send_message(str(exc), ephemeral=True)
                return
            self.stop()
            await interaction.response.edit_message(
                content=f"You rated **{title_of(self.entry)}** {'★' * stars}{'☆' * (5 - stars)}", view=None)

        return callback


class QuickRateView(OwnedView):
    """/rate: popular items one at a time; a star rating or Skip moves to the next."""

    def __init__(self, api: EddyApi, owner: discord.abc.User, items: list[dict[str, Any]]) -> None:
        super().__init__(owner)
        self.api, self.items = api, items
        self.user_id = eddy_user(owner)
        self.index = 0
        self.rated = 0
        for stars in STARS:
            button: discord.ui.Button = discord.ui.Button(label="★" * stars, custom_id=f"eddy:quick:{stars}")
            button.callback = self._make_callback(stars)
            self.add_item(button)
        skip: discord.ui.Button = discord.ui.Button(label="Skip", style=discord.ButtonStyle.secondary,
                                                    custom_id="eddy:quick:skip")
        skip.callback = self._make_callback(None)
        self.add_item(skip)

    def content(self) -> str:
        entry = self.items[self.index]
        category = (entry.get("item") or {}).get("category")
        return (f"Quick rating {self.index + 1}/{len(self.items)}: **{title_of(entry)}**"
                + (f" ({category})" if category else ""))

    def _make_callback(self, stars: int | None) -> Any:
        async def callback(interaction: discord.Interaction) -> None:
            if stars is not None:
                entry = self.items[self.index]
                try:
                    await self.api.send([interaction_event(self.user_id, entry["item_id"], "rate", value=stars)])
                except EddyUnavailable as exc:
                    await interaction.response.send_message(str(exc), ephemeral=True)
                    return
                self.rated += 1
            self.index += 1
            if self.index >= len(self.items):
                self.stop()
                await interaction.response.edit_message(
                    content=f"Thanks! {self.rated} ratings sent: /recommend shows what Eddy made of them.", view=None)
                return
            await interaction.response.edit_message(content=self.content(), view=self)

        return callback


def profile_embed(member: discord.abc.User, profile: dict[str, Any]) -> discord.Embed:
    embed = discord.Embed(title=f"What Eddy knows about {member.display_name}", colour=discord.Colour.green())
    counts = ", ".join(f"{a} {n}" for a, n in profile["counts"].items() if a != "impression")
    embed.add_field(name="Interactions", value=f"{profile['interactions']}" + (f" ({counts})" if counts else ""),
                    inline=False)
    cats = profile["favourite_categories"][:3]
    embed.add_field(name="Favourite categories",
                    value="\n".join(f"{c['name']}: {c['positive']} liked of {c['count']}" for c in cats) or "none yet",
                    inline=False)
    style = profile["rating_style"]
    embed.add_field(name="Rating style",
                    value=f"{style['style']} (mean {style['mean']}★ over {style['ratings']})" if style["style"]
                    else "no ratings yet")
    embed.add_field(name="Diversity", value=f"{profile['diversity']:.2f} (0 = one category, 1 = all alike)")
    return embed


def build_tree(client: discord.Client, api: EddyApi) -> app_commands.CommandTree:
    """The bot's slash commands, each a thin call to the Eddy API."""
    tree = app_commands.CommandTree(client)

    async def fail(interaction: discord.Interaction, exc: EddyUnavailable) -> None:
        await interaction.response.send_message(str(exc), ephemeral=True)

    @tree.command(name="recommend", description="Your picks from Eddy, with 👍 / 👎 / ⭐ buttons.")
    async def recommend(interaction: discord.Interaction) -> None:
        try:
            doc = await api.recommendations(eddy_user(interaction.user))
        except EddyUnavailable as exc:
            return await fail(interaction, exc)
        view = FeedbackView(api, interaction.user, doc)
        note = "New here: these are popular picks until Eddy learns your taste." if doc["cold_start"] else None
        await interaction.response.send_message(note, embed=view.embed(), view=view, ephemeral=True)
        # What was shown, with its positions: Eddy's click-through rate counts these.
        try:
            await api.send([interaction_event(eddy_user(interaction.user), e["item_id"], "impression",
                                              rec_id=doc["rec_id"], position=e["position"])
                            for e in doc["items"][:LIST_SIZE]])
        except EddyUnavailable:
            log.warning("impressions of %s not recorded", doc["rec_id"])

    @tree.command(name="rate", description="Quickly rate popular items, one after another.")
    async def rate(interaction: discord.Interaction) -> None:
        try:
            items = await api.popular(10)
        except EddyUnavailable as exc:
            return await fail(interaction, exc)
        if not items:
            await interaction.response.send_message("Nothing to rate yet: Eddy has no popular items.", ephemeral=True)
            return
        view = QuickRateView(api, interaction.user, items)
        await interaction.response.send_message(view.content(), view=view, ephemeral=True)

    @tree.command(name="my_stats", description="What Eddy has learned about your taste.")
    async def my_stats(interaction: discord.Interaction) -> None:
        try:
            profile = await api.profile(eddy_user(interaction.user))
        except EddyUnavailable as exc:
            return await fail(interaction, exc)
        if profile is None:
            await interaction.response.send_message("Eddy doesn't know you yet: try /rate or /recommend.", ephemeral=True)
            return
        await interaction.response.send_message(embed=profile_embed(interaction.user, profile), ephemeral=True)

    @tree.command(name="forget_me", description="Delete everything Eddy knows about you.")
    async def forget_me(interaction: discord.Interaction) -> None:
        try:
            await api.forget(eddy_user(interaction.user))
        except EddyUnavailable as exc:
            return await fail(interaction, exc)
        await interaction.response.send_message(
            "Done: Eddy is deleting your interactions, profile and list; it will treat you as new.", ephemeral=True)

    @tree.command(name="movie_night", description="One list the whole group would enjoy.")
    @app_commands.describe(a="Someone to watch with", b="Someone else", c="And another", d="And another")
    async def movie_night(interaction: discord.Interaction, a: discord.User, b: discord.User | None = None,
                          c: discord.User | None = None, d: discord.User | None = None) -> None:
        members = list({m.id: m for m in (interaction.user, a, b, c, d) if m is not None}.values())
        if len(members) < 2:
            await interaction.response.send_message("Movie night needs at least one other person: /movie_night @friend.",
                                                    ephemeral=True)
            return
        try:
            doc = await api.group([eddy_user(m) for m in members])
        except EddyUnavailable as exc:
            return await fail(interaction, exc)
        embed = list_embed(f"Movie night for {', '.join(m.display_name for m in members)}", doc["items"])
        newcomers = [m.mention for m in members if eddy_user(m) in doc["cold_start_members"]]
        if newcomers:
            embed.set_footer(text=f"{len(newcomers)} of you are new to Eddy: their picks are the popular ones.")
        await interaction.response.send_message(embed=embed, allowed_mentions=discord.AllowedMentions.none())

    return tree


class EddyBot(discord.Client):
    """The Discord client: slash commands only, so no privileged intents are needed."""

    def __init__(self, api: EddyApi, *, guild_id: int | None = None) -> None:
        super().__init__(intents=discord.Intents.none())
        self.api = api
        self.guild_id = guild_id
        self.tree = build_tree(self, api)

    async def setup_hook(self) -> None:
        # A server's commands update at once; global ones can take up to an hour to appear.
        if self.guild_id is not None:
            guild = discord.Object(id=self.guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
        else:
            await self.tree.sync()

    async def close(self) -> None:
        await self.api.close()
        await super().close()


def run_bot(settings: Settings) -> None:
    """Run the bot until stopped; BotNotConfigured (with the reason) if it cannot start."""
    if settings.discord_bot_token is None:
        raise BotNotConfigured(
            "EDDY_DISCORD_BOT_TOKEN is not set: the Discord bot needs a bot token from the Discord developer "
            "portal (Applications > your app > Bot > Reset Token)."
        )
    bot = EddyBot(EddyApi.from_settings(settings), guild_id=settings.discord_guild_id)
    bot.run(settings.discord_bot_token.get_secret_value(), log_handler=None)
