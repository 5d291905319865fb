"""``eddy``: one command line for running, feeding and inspecting Eddy.

``eddy up`` runs the whole embedded stack on this machine; ``eddy worker`` and ``eddy api``
run one part each (as in production); ``eddy simulate`` streams a demo workload into the
API; ``eddy scraper`` runs an example self-healing scraper on a simulated web;
``eddy topics`` declares the Kafka topics; ``eddy schemas`` exports the event
contracts as JSON Schema; ``eddy evaluate`` replays a file of events test-then-train;
``eddy export bids`` writes the bids joined with their outcomes as a versioned dataset;
``eddy discord`` runs the Discord bot.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console

from deploy.runtime import tune_gc
from schemas.settings import Settings, get_settings

cli = typer.Typer(
    name="eddy",
    help="Eddy: a real-time recommender that learns from every event.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console()


@cli.callback()
def _check_settings() -> None:
    """Every command starts from valid settings: a bad one is one line per error, naming the
    environment variable and the reason (never its value), and exit 2, not a traceback."""
    from pydantic import ValidationError

    try:
        get_settings()
    except ValidationError as exc:
        for err in exc.errors():
            name = "EDDY_" + "_".join(str(p) for p in err["loc"]).upper()
            console.print(f"[red]invalid setting {name}: {err['msg']}[/]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@cli.command()
def worker() -> None:
    """Run one stream worker: consume the topics, learn, write the read model to Redis.

    Start as many as you like with the same EDDY_CONSUMER_GROUP; partitions are shared
    among them.
    """
    import faust

    from deploy.topics import ensure_topics
    from streams.app import create_app

    settings = get_settings()
    _logging(settings)
    tune_gc()
    ensure_topics(settings)
    app = create_app(settings)
    faust.Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False).execute_from_commandline()


@cli.command()
def api(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
) -> None:
    """Run the HTTP API (FastAPI under uvicorn)."""
    import uvicorn

    settings = get_settings()
    _logging(settings)
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # uvicorn's C event loop and HTTP parser: 23% more GETs per second than
        # asyncio's loop with h11 on the same hardware (docs/benchmarks.md).
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level,
        access_log=False,
    )


@cli.command()
def simulate(
    api_url: Annotated[str, typer.Option("--api", help="Base URL of the Eddy API.")] = "http://127.0.0.1:8000",
    rate: Annotated[float, typer.Option(help="Events per second (0 = as fast as the API takes them).")] = 200.0,
    batch: Annotated[int, typer.Option(help="Events per POST.")] = 100,
    limit: Annotated[int, typer.Option(help="Stop after this many events (0 = never).")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed of the simulated world.")] = 7,
    api_key: Annotated[str | None, typer.Option(envvar="EDDY_PRODUCER_API_KEY", help="X-API-Key.")] = None,
    scrapes: Annotated[
        bool, typer.Option(help="Include scrape attempts (--no-scrapes leaves them to `eddy scraper`).")
    ] = True,
) -> None:
    """Stream a simulated workload (users, items, scrapers, bids) into the API."""
    from deploy.feeder import feed

    try:
        feed(
            api_url, rate=rate, batch=batch, limit=limit, seed=seed, api_key=api_key, scrapes=scrapes,
            console=console,
        )
    except RuntimeError as exc:  # refused, or the API stayed away: say so, no traceback
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None


@cli.command()
def scraper(
    rate: Annotated[float, typer.Option(help="Scrape attempts per second (0 = as fast as possible).")] = 20.0,
    domains: Annotated[int, typer.Option(help="Simulated domains to scrape (the simulator's first N).")] = 10,
    seed: Annotated[int, typer.Option(help="Random seed of the simulated web and of exploration.")] = 7,
    duration: Annotated[float, typer.Option(help="Stop after this many seconds (0 = until Ctrl-C).")] = 0.0,
    break_rate: Annotated[
        float, typer.Option(help="Breaks per second of each working strategy on each domain.")
    ] = 1 / 900,
    recover_rate: Annotated[float, typer.Option(help="Recoveries per second of each broken strategy.")] = 1 / 120,
) -> None:
    """Run an example self-healing scraper on a simulated web.

    It follows the worker's strategy switches, explores other strategies now and then, and
    reports every attempt to Kafka; strategies break and recover at random times.
    """
    from deploy.example_scraper import run_example

    settings = get_settings()
    _logging(settings)
    run_example(
        settings, rate=rate, n_domains=domains, seed=seed, duration=duration,
        break_per_s=break_rate, recover_per_s=recover_rate, console=console,
    )


@cli.command()
def topics(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the broker.")] = 60.0,
) -> None:
    """Create every Eddy topic that does not exist yet, with its partition count."""
    from kafka.errors import KafkaError

    from deploy.topics import ensure_topics

    settings = get_settings()
    console.print(f"connecting to Kafka at {settings.kafka_bootstrap} (up to {timeout:g} s)")
    try:
        created = ensure_topics(settings, timeout_s=timeout, on_wait=lambda why: console.print(f"[yellow]{why}[/]"))
    except KafkaError as exc:
        console.print(f"[red]no Kafka broker at {settings.kafka_bootstrap} within {timeout:g} s: "
                      f"{type(exc).__name__}: {exc}[/]")
        raise typer.Exit(1) from None
    console.print(f"created: {', '.join(created) or 'nothing (all topics exist)'}")


@cli.command()
def token(
    user_id: Annotated[str, typer.Argument(help="The user the token lets read its own list and profile.")],
    ttl: Annotated[float, typer.Option(help="Seconds the token stays valid.")] = 3600.0,
) -> None:
    """Mint a user token (needs EDDY_USER_TOKEN_SECRET), as a UI backend would for its user."""
    from api.deps import mint_user_token

    settings = get_settings()
    if settings.user_token_secret is None:
        console.print("[red]EDDY_USER_TOKEN_SECRET is not set: user tokens are off[/]")
        raise typer.Exit(1)
    print(mint_user_token(settings.user_token_secret, user_id, ttl))


@cli.command()
def schemas(
    out: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")] = None,
) -> None:
    """Export the event contracts as one JSON Schema document."""
    from schemas.jsonschema import render_json_schema

    text = render_json_schema()
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        console.print(f"wrote {out}")


@cli.command()
def evaluate(
    events_file: Annotated[Path, typer.Argument(help="JSON lines (.jsonl, or gzip'd .jsonl.gz): one event per line, as POSTed to the API.")],
    k: Annotated[int, typer.Option(help="Length of each ranked list.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Also replay Eddy as this many workers, users "
                                         "spread over them by id, sharing item facts (eddy_<n>_workers).")] = 1,
) -> None:
    """Replay a file of events test-then-train; compare Eddy with popularity, decayed popularity and item-kNN.

    Events are sorted by event time. Every positive interaction (click, like, save, view,
    rate >= 4) on an item new to the user is a target, ranked before it is learned.
    """
    from deploy.evaluate import run_evaluation

    code = run_evaluation(events_file, k=k, as_json=as_json, console=console, workers=workers)
    raise typer.Exit(code)


@cli.command()
def replay(
    model: Annotated[str, typer.Argument(help="The model to rebuild: recommender.")],
    start: Annotated[str, typer.Option("--from", help="earliest, a time (epoch seconds or ISO 8601), "
                                       "or offsets like 0:120,1:0.")] = "earliest",
    params: Annotated[str | None, typer.Option(help="JSON of parameters (default: the serving version's).")] = None,
    name: Annotated[str | None, typer.Option(help="Name of the new version (default: r<UTC time>).")] = None,
    promote: Annotated[bool, typer.Option(help="Serve the new version once built.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Rebuild a model from the Kafka log into a new version; compare it with the serving one.

    Deletions in the log are honoured. The version is saved as a snapshot with the offsets
    it learned up to and listed by GET /api/models; --promote serves it (the workers catch
    it up from those offsets first).
    """
    import asyncio

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeRemainingColumn,
    )
    from rich.table import Table

    from deploy.replay import parse_start, replay_recommender

    if model != "recommender":
        console.print(f"[red]cannot replay {model!r}:[/red] only the recommender is rebuilt from the log "
                      "(the strategy selectors' state is written with every batch, the bid model "
                      "resumes from its snapshots)")
        raise typer.Exit(2)
    try:
        parse_start(start)
        overrides = orjson.loads(params) if params else None
    except (ValueError, orjson.JSONDecodeError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    settings = get_settings()
    _logging(settings)
    err = Console(stderr=True)
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal) as progress:
        reading = progress.add_task("reading the log", total=None)
        learning = progress.add_task("learning", total=None)
        report = asyncio.run(replay_recommender(
            settings, start=start, params=overrides, name=name, promote=promote,
            on_records=lambda n: progress.advance(reading, n),
            on_events=lambda done, total: progress.update(learning, completed=done, total=total),
        ))
    if as_json:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
        return
    table = Table(title=f"{report['version']}: {report['events']:,} events from {report['from']} "
                        f"at {report['events_per_s']:,.0f} events/s")
    for col in ("model", "targets", "HR@10", "NDCG@10"):
        table.add_column(col, justify="left" if col == "model" else "right")

    def row(label: str, m: dict | None) -> None:
        if m and m["targets"]:
            table.add_row(label, f"{m['targets']:,}", f"{m['hr_at_10']:.4f}", f"{m['ndcg_at_10']:.4f}")

    row(f"{report['version']} (replayed)", report["metrics"])
    if report["serving"]:
        row(f"{report['serving']['version']} (serving, live)", report["serving"])
    row("popularity (replayed)", report["baseline"])
    console.print(table)
    console.print(f"snapshot: {report['snapshot']}" + ("; promoted" if report["promoted"] else ""))


@cli.command()
def up(
    demo: Annotated[bool, typer.Option(help="Run the demo producer and the example scraper.")] = True,
    rate: Annotated[float, typer.Option(help="Demo events per second.")] = 200.0,
    scraper_rate: Annotated[float, typer.Option(help="Scrape attempts per second of the example scraper.")] = 20.0,
    api_port: Annotated[int, typer.Option(help="API port (0 = any free port).")] = 8000,
    duration: Annotated[float, typer.Option(help="Stop after this many seconds (0 = until Ctrl-C).")] = 0.0,
    workdir: Annotated[Path, typer.Option(help="Logs and Redis data go here.")] = Path(".eddy"),
) -> None:
    """Run everything on this machine: broker, Redis, worker, API, a demo producer and an
    example scraper.

    No Docker needed. Ctrl-C stops every process it started.
    """
    from deploy.embedded import run_stack

    code = run_stack(
        demo=demo, rate=rate, scraper_rate=scraper_rate, api_port=api_port, duration=duration,
        workdir=workdir, console=console,
    )
    raise typer.Exit(code)


@cli.command("discord")
def discord_bot() -> None:
    """Run the Discord bot: /recommend, /rate, /my_stats, /forget_me and /movie_night on the Eddy API.

    Needs EDDY_DISCORD_BOT_TOKEN; calls the API at EDDY_DISCORD_API_URL with the producer
    and read keys when they are set.
    """
    from deploy.discord_bot import BotNotConfigured, run_bot

    settings = get_settings()
    _logging(settings)
    try:
        run_bot(settings)
    except BotNotConfigured as exc:
        console.print(f"[red]the Discord bot did not start:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc


export_cli = typer.Typer(help="Write versioned datasets for offline training.", no_args_is_help=True)
cli.add_typer(export_cli, name="export")


@export_cli.command("bids")
def export_bids_command(
    out: Annotated[Path, typer.Option(help="Directory the dataset, its schema and manifest go to.")],
    timeout: Annotated[float, typer.Option(help="Longest to wait for the bids topic to be read, in seconds.")] = 60.0,
) -> None:
    """Export the bids that have an outcome, joined with it, as a dated Parquet file.

    Beside it go its schema and a manifest: rows, date ranges, the topic offsets read,
    what was left out, and the file's SHA-256.
    """
    from rich.table import Table

    from deploy.export import export_bids

    settings = get_settings()
    _logging(settings)
    try:
        manifest = export_bids(settings, out, timeout_s=timeout)
    except (RuntimeError, TimeoutError, FileExistsError) as exc:
        console.print(f"[red]export failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    table = Table(title=f"{out / manifest['file']}", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("rows", f"{manifest['rows']:,}")
    for span in ("placed_at", "outcome_at"):
        table.add_row(span, f"{manifest[span]['min'] or '-'} .. {manifest[span]['max'] or '-'}")
    table.add_row("topic", manifest["topic"])
    table.add_row("offsets", ", ".join(
        f"{p}: {o['start']}-{o['end']}" for p, o in manifest["source_offsets"].items()
    ))
    table.add_row("features from", ", ".join(f"{k} {v:,}" for k, v in manifest["features_from"].items()))
    table.add_row("left out", (
        f"{manifest['bids_without_outcome']:,} bids without outcome, "
        f"{manifest['outcomes_without_bid']:,} outcomes without bid, "
        f"{manifest['invalid_records']:,} invalid, {manifest['duplicates']:,} duplicates"
    ))
    table.add_row("sha256", manifest["sha256"])
    console.print(table)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
