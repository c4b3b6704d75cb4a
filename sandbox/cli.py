"""`persona-sync sandbox ...`: run the local Salesforce-compatible sandbox.

The sandbox is an application of its own: it imports nothing of persona-sync. The command that hosts
these sub-commands gives their defaults (`sandbox_commands(defaults)`: data directory, port, preset and
seed), so `persona-sync sandbox start` follows PERSONA_SYNC_HOME and the PERSONA_SYNC_SANDBOX_* settings.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer

from sandbox.runner import RunningSandbox, SandboxConfig, SandboxError, prepare_org, serve
from sandbox.server.faults import FaultSettings
from sandbox.export_loader import ExportError
from sandbox.store import StoreError

DataDir = Annotated[Optional[Path], typer.Option(
    "--data-dir", help="The sandbox's data directory. [default: PERSONA_SYNC_SANDBOX_DIR, <PERSONA_SYNC_HOME>/sandbox]")]
Preset = Annotated[Optional[str], typer.Option(
    help="Org size: small (~200 users), medium (~2,000), large (~20,000). [default: PERSONA_SYNC_SANDBOX_PRESET, small]")]
Seed = Annotated[Optional[int], typer.Option(
    help="Seed of the generated org: same seed, same org. [default: PERSONA_SYNC_SANDBOX_SEED, 7]")]
WorldName = Annotated[str, typer.Option(
    "--world", help="The world the org is generated in: 'default' (today's org) or a seed to draw one from "
                    "(base rates, persona mix, logging conventions, export; see sandbox/generate/worlds.py).")]
Export = Annotated[Optional[str], typer.Option(
    help="Force the world's export: 'full', or 'partial' (optional objects and fields absent from describe). "
         "Default: as the world draws it.")]


@dataclass(frozen=True)
class CommandDefaults:
    """What the sandbox commands use for an option not given."""

    data_dir: Path
    port: int
    preset: str
    seed: int


# The value type of each fault that maps keys to values (the rest take text).
_FAULT_MAP_VALUES: dict[str, type] = {"hidden_rows": float, "locked_ids": int}


def _faults(specs: list[str]) -> FaultSettings:
    values: dict[str, object] = {}
    defaults = FaultSettings()
    for spec in specs:
        name, separator, raw = spec.partition("=")
        if not separator or not hasattr(defaults, name):
            raise typer.BadParameter(f"{spec!r}: use NAME=VALUE with NAME one of {list(vars(defaults))}",
                                     param_hint="--fault")
        current = getattr(defaults, name)
        if isinstance(current, list):
            values[name] = [part for part in raw.split(",") if part]
        elif isinstance(current, dict):  # hidden_rows=Task:0.9,Case:0.5  locked_ids=005...:2
            kind = _FAULT_MAP_VALUES.get(name, str)
            try:
                values[name] = {key: kind(value) for key, _, value in
                                (part.partition(":") for part in raw.split(",") if part)}
            except ValueError:
                raise typer.BadParameter(f"{spec!r}: use {name}=KEY:{kind.__name__},...", param_hint="--fault") from None
        elif isinstance(current, float):
            values[name] = float(raw)
        else:
            values[name] = int(raw)
    return FaultSettings.from_json(values)


def _world(name: str, export: str | None):
    """The World named on the command line (`--world`, `--export`), or a usage error saying what is accepted."""
    from sandbox.generate.worlds import InvalidWorld, World

    try:
        return World.named(name, export=export)
    except InvalidWorld as error:
        raise typer.BadParameter(str(error), param_hint="--world / --export") from None


def sandbox_commands(defaults: Callable[[], CommandDefaults]) -> typer.Typer:
    """The `sandbox` sub-commands; `defaults` gives the options not given (read when a command runs)."""
    app = typer.Typer(help="Run the local Salesforce-compatible HTTPS sandbox and its synthetic org.",
                      no_args_is_help=True)

    @app.command()
    def start(
        data_dir: DataDir = None,
        preset: Preset = None,
        seed: Seed = None,
        as_of: Annotated[Optional[datetime], typer.Option(
            help="The org's 'today' (history ends here). [default: the current hour, UTC]")] = None,
        hybrid_share: Annotated[float, typer.Option(help="Share of users who mix two personas.")] = 0.10,
        noise: Annotated[float, typer.Option(help="Spread of per-user rate noise (1 = normal, 2 = twice).")] = 1.0,
        world: WorldName = "default",
        export: Export = None,
        from_export: Annotated[Optional[Path], typer.Option(
            help="Seed the org from a Data Loader export (one <Object>.csv per sObject) instead of generating it.",
            exists=True, file_okay=False)] = None,
        host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[Optional[int], typer.Option(
            help="Port to listen on (0: any free port). [default: PERSONA_SYNC_SANDBOX_PORT, 8443]")] = None,
        session_idle_seconds: Annotated[float, typer.Option(help="Sessions expire after this long unused.")] = 7200,
        daily_api_limit: Annotated[int, typer.Option(help="The org's DailyApiRequests allowance.")] = 100_000,
        fault: Annotated[list[str], typer.Option(
            help="Inject a fault, NAME=VALUE (repeatable): request_limit_after, request_limit_calls, "
                 "unavailable_share, cut_bulk_downloads, fail_update_ids (comma-separated), update_errors "
                 "(Id:ERROR_CODE,...), locked_ids (Id:times,...: UNABLE_TO_LOCK_ROW), hidden_rows "
                 "(Object:share,...: rows queries do not see, a truncated pull), slow_ms, seed.")] = [],
        reset: Annotated[bool, typer.Option(help="Delete the data directory's org first and generate it anew.")] = False,
        quiet: Annotated[bool, typer.Option(help="Print nothing but errors.")] = False,
    ) -> None:
        """Start the sandbox (HTTPS) and serve until Ctrl-C. Generates the org on first start."""
        given = defaults()
        directory = data_dir or given.data_dir
        if reset:
            for name in ("org.db", "org.db-wal", "org.db-shm", "results.db", "results.db-wal", "results.db-shm"):
                (directory / name).unlink(missing_ok=True)
            shutil.rmtree(directory / "truth", ignore_errors=True)
            shutil.rmtree(directory / "bulk", ignore_errors=True)
        config = SandboxConfig(
            data_dir=directory, preset=preset or given.preset, seed=given.seed if seed is None else seed,
            as_of=as_of.replace(tzinfo=as_of.tzinfo or timezone.utc) if as_of else None,
            hybrid_share=hybrid_share, noise=noise, world=_world(world, export), from_export=from_export, host=host,
            port=given.port if port is None else port,
            session_idle_seconds=session_idle_seconds, daily_api_limit=daily_api_limit, faults=_faults(fault))
        started = time.monotonic()

        def ready(sandbox: RunningSandbox) -> None:
            if not quiet:
                typer.echo(f"Sandbox ready in {time.monotonic() - started:.1f} s at {sandbox.url}\n"
                           f"  trust its CA:   {sandbox.ca_cert}\n"
                           f"  org database:   {sandbox.org_path}\n"
                           f"  persona truth:  {sandbox.truth_csv}\n"
                           f"  admin token:    {directory / 'admin-token'}\n"
                           "Press Ctrl-C to stop.")

        try:
            serve(config, on_ready=ready)
        except (SandboxError, StoreError, ExportError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from error


    @app.command()
    def generate(
        data_dir: DataDir = None,
        preset: Preset = None,
        seed: Seed = None,
        as_of: Annotated[Optional[datetime], typer.Option(help="The org's 'today'. [default: the current hour, UTC]")] = None,
        hybrid_share: Annotated[float, typer.Option(help="Share of users who mix two personas.")] = 0.10,
        noise: Annotated[float, typer.Option(help="Spread of per-user rate noise.")] = 1.0,
        world: WorldName = "default",
        export: Export = None,
    ) -> None:
        """Generate the synthetic org without serving it; prints rows per object."""
        given = defaults()
        directory = data_dir or given.data_dir
        config = SandboxConfig(data_dir=directory, preset=preset or given.preset,
                               seed=given.seed if seed is None else seed,
                               as_of=as_of.replace(tzinfo=as_of.tzinfo or timezone.utc) if as_of else None,
                               hybrid_share=hybrid_share, noise=noise, world=_world(world, export))
        started = time.monotonic()
        try:
            store = prepare_org(config)
        except (SandboxError, StoreError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from error
        total = 0
        for name in sorted(store.schema):
            rows = store.count(name)
            total += rows
            typer.echo(f"{name:<26}{rows:>12,}")
        typer.echo(f"{'total':<26}{total:>12,}   ({time.monotonic() - started:.1f} s) in {config.org_path}")

    return app
