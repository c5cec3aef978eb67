"""`rfidd-sim`: run simulated readers from a scenario until SIGINT/SIGTERM.

    rfidd-sim llrp --port 5084 --scenario simulator/scenarios/demo-store.toml [--reader floor-1]
        [--quirks needs-start-rospec,no-get-rospecs] [--identity impinj|zebra|generic]
    rfidd-sim run --scenario simulator/scenarios/store-with-desk.toml [--base-port 15084]
        prints one line per reader once all are up, LLRP first, then serial:
            stockroom-1 127.0.0.1:40231
            pos-desk /tmp/rfidd-serial-k2j1/pos-desk binary

    rfidd-sim serial --protocol binary --tags 20   (forwarded to simulator.serial_sim)
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import click

from simulator.llrp.reader import IDENTITIES, QUIRKS, ReaderQuirks
from simulator.llrp.site import SimulatedSite
from simulator.scenario import Scenario, ScenarioError


def _load(path: Path) -> Scenario:
    try:
        return Scenario.load(path)
    except ScenarioError as exc:
        lines = "\n  ".join(exc.errors)
        raise click.ClickException(f"{exc.source}:\n  {lines}") from exc


def _serve(site: SimulatedSite) -> None:
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    def on_usr1(signum: int, _frame: FrameType | None) -> None:
        # Benchmarks: stop generating reads and say how many tag reports went out.
        site.hold(True)
        reported = -1
        while True:  # reports already due still go out: wait until the count is stable
            now = sum(r.stats.tags_reported for r in site.readers.values())
            if now == reported:
                break
            reported = now
            time.sleep(0.5)
        print(f"held reported={reported}", flush=True)

    def on_usr2(signum: int, _frame: FrameType | None) -> None:
        # Benchmarks: how many tag reports went out so far (the offered rate actually sent).
        now = sum(r.stats.tags_reported for r in site.readers.values())
        print(f"sent reported={now}", flush=True)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGUSR2, on_usr2)
    try:
        site.start()
    except OSError as exc:
        notes = "; ".join(getattr(exc, "__notes__", []))
        raise click.ClickException(f"cannot start {notes or 'the site'}: {exc}") from exc
    try:
        for name, port in sorted(site.ports.items()):
            click.echo(f"{name} {site.host}:{port}")
        for name, path in sorted(site.serial_paths.items()):
            click.echo(f"{name} {path} {site.serial_readers[name].protocol}")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        site.stop()
        click.echo("stopped", err=True)


@click.group()
@click.option("-v", "--verbose", count=True, help="-v: info, -vv: debug logs.")
def main(verbose: int) -> None:
    """Simulated RFID readers for rfidd (LLRP 1.0.1 over TCP, serial readers on ptys)."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


_scenario_opt = click.option(
    "--scenario", "scenario_path", required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Scenario TOML file.")
_host_opt = click.option("--host", default="127.0.0.1", show_default=True,
                         help="Address to listen on.")
_scale_opt = click.option("--time-scale", default=1.0, show_default=True, type=float,
                          help="Run the timeline this many times faster.")


def _quirk_names(_ctx: click.Context, _param: click.Parameter,
                 value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [q for q in (v.strip() for v in value.split(",")) if q]
    try:
        ReaderQuirks.from_names(names)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    return names


_quirks_opt = click.option(
    "--quirks", default=None, callback=_quirk_names,
    help="Comma-separated field quirks for every LLRP reader, overriding the scenario's: "
    + ", ".join(sorted(QUIRKS)) + " (loses-rospec=SECONDS).")
_identity_opt = click.option(
    "--identity", type=click.Choice(sorted(IDENTITIES)), default=None,
    help="What the LLRP readers claim to be (capabilities), overriding the scenario's.")


@main.command()
@_scenario_opt
@click.option("--port", default=5084, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0: any free port).")
@click.option("--reader", "reader_name", default=None,
              help="Which reader of the scenario (default: the first by name).")
@_host_opt
@_scale_opt
@_quirks_opt
@_identity_opt
def llrp(scenario_path: Path, port: int, reader_name: str | None, host: str,
         time_scale: float, quirks: list[str] | None, identity: str | None) -> None:
    """One simulated LLRP reader on PORT."""
    scenario = _load(scenario_path)
    if not scenario.readers:
        raise click.ClickException(f"{scenario_path}: the scenario has no LLRP reader")
    name = reader_name or sorted(scenario.readers)[0]
    if name not in scenario.readers:
        raise click.BadParameter(f"no reader {name!r} in the scenario (readers: "
                                 f"{', '.join(sorted(scenario.readers))})", param_hint="--reader")
    _serve(SimulatedSite(scenario, host=host, base_port=port, only=[name],
                         time_scale=time_scale, quirks=quirks, identity=identity))


@main.command()
@_scenario_opt
@click.option("--base-port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="First port; readers get consecutive ports by name (0: any free ports).")
@_host_opt
@_scale_opt
@_quirks_opt
@_identity_opt
def run(scenario_path: Path, base_port: int, host: str, time_scale: float,
        quirks: list[str] | None, identity: str | None) -> None:
    """Every reader of the scenario and its timeline.

    Prints 'name host:port' per LLRP reader, then 'name device-path protocol' per serial reader.
    """
    _serve(SimulatedSite(_load(scenario_path), host=host, base_port=base_port,
                         time_scale=time_scale, quirks=quirks, identity=identity))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                "help_option_names": []})
@click.pass_context
def serial(ctx: click.Context) -> None:
    """A serial desk reader on a pty (options: see `rfidd-sim serial --help`)."""
    module = importlib.import_module("simulator.serial_sim")
    ctx.exit(int(module.main(list(ctx.args))))


if __name__ == "__main__":
    main()
