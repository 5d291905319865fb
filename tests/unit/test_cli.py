"""What the CLI tells its user (issue 18): `eddy simulate` says what it does and gives up on
an API that stays away (it printed nothing and retried forever, silently); `eddy topics`
without a broker says so in time; a bad setting is one line, not a traceback."""

from __future__ import annotations

import socket

import httpx
import pytest
from rich.console import Console

from deploy.feeder import feed, post_batch


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_an_api_that_stays_away_is_reported_at_each_retry_then_given_up() -> None:
    retries: list[tuple[str, float]] = []
    url = f"http://127.0.0.1:{closed_port()}/api/events"
    with httpx.Client(timeout=1.0) as client, pytest.raises(RuntimeError, match="has not taken a batch for 2 s"):
        post_batch(client, url, [{"type": "interaction"}], {}, on_retry=lambda r, d: retries.append((r, d)),
                   give_up_s=2.0)
    assert [d for _, d in retries] == [0.5, 1.0] and all("ConnectError" in r for r, _ in retries)


def test_the_feeder_announces_itself_and_its_retries(capsys: pytest.CaptureFixture[str]) -> None:
    console = Console(file=None, force_terminal=False, width=200)
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(RuntimeError):
        feed(url, rate=0, batch=10, limit=10, seed=1, api_key=None, console=console, give_up_s=1.0)
    out = capsys.readouterr().out
    assert f"streaming simulated events to {url}/api/events" in out
    assert "the API did not take the batch (ConnectError" in out and "retrying in 0.5 s" in out


def test_eddy_topics_without_a_broker_says_so_and_gives_up_on_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """It was silent for over 60 s, then printed a traceback."""
    from typer.testing import CliRunner

    from deploy.cli import cli
    from schemas.settings import get_settings

    monkeypatch.setenv("EDDY_KAFKA_BOOTSTRAP", f"127.0.0.1:{closed_port()}")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["topics", "--timeout", "2"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    assert "connecting to Kafka at 127.0.0.1:" in result.output and "no Kafka broker at" in result.output
    assert "Traceback" not in result.output


def test_a_bad_setting_is_one_line_naming_it_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from deploy.cli import cli
    from schemas.settings import get_settings

    monkeypatch.setenv("EDDY_USER_TOKEN_SECRET", "short-and-secret")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["topics"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "invalid setting EDDY_USER_TOKEN_SECRET" in result.output and "at least 32 characters" in result.output
    assert "Traceback" not in result.output and "short-and-secret" not in result.output
