"""The Discord bot's start-up and its pure helpers (its commands run against the real
stack in tests/integration/test_discord_bot.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import discord
import pytest

from deploy.discord_bot import interaction_event, list_embed
from schemas.settings import Settings


def test_without_a_token_the_bot_does_not_start_and_says_why(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "EDDY_DISCORD_BOT_TOKEN": ""}
    out = subprocess.run([sys.executable, "-m", "deploy.cli", "discord"], check=False, capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=60)
    assert out.returncode == 2
    assert out.stdout.startswith("the Discord bot did not start: EDDY_DISCORD_BOT_TOKEN is not set: ")


def test_discord_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDDY_DISCORD_BOT_TOKEN", "token-from-env")
    monkeypatch.setenv("EDDY_DISCORD_API_URL", "http://eddy-api:8000")
    monkeypatch.setenv("EDDY_DISCORD_GUILD_ID", "123456789012345678")
    s = Settings()
    assert s.discord_bot_token.get_secret_value() == "token-from-env" and "token-from-env" not in repr(s)
    assert (s.discord_api_url, s.discord_guild_id) == ("http://eddy-api:8000", 123456789012345678)


def test_interaction_events_carry_only_what_is_known() -> None:
    assert interaction_event("discord:1", "film-2", "like", rec_id="01J", position=0) == {
        "type": "interaction", "user_id": "discord:1", "item_id": "film-2", "action": "like", "rec_id": "01J",
        "position": 0}
    assert interaction_event("discord:1", "film-2", "rate", value=4) == {
        "type": "interaction", "user_id": "discord:1", "item_id": "film-2", "action": "rate", "value": 4}


def test_list_embed_numbers_items_and_marks_reactions() -> None:
    entries = [{"item_id": "a", "score": 0.91, "reason": "trending", "item": {"title": "Alien", "category": "horror"}},
               {"item_id": "b", "score": 0.5, "item": {}}]
    embed = list_embed("Picks", entries, {0: "👍"})
    assert isinstance(embed, discord.Embed) and embed.title == "Picks"
    assert embed.description == "**1. Alien** 👍\nhorror · trending · score 0.91\n**2. b**\nscore 0.50"
    assert list_embed("Picks", []).description == "Nothing to recommend yet: send a few ratings with /rate."
