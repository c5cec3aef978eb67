"""The `rfidd` command."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from rfidd.config import EX_CONFIG, EX_TEMPFAIL, Config, ConfigError, MqttConfig, load_config


def _setup_logging(level: str, fmt: str | None = None) -> None:
    """Structured logs (rfidd/logs.py): key=value by default, --log-format or RFIDD_LOG_FORMAT."""
    from rfidd.logs import configure

    configure(level, fmt)


def install_signal_handlers(stop: threading.Event) -> None:
    """Signals only set the stop event; the main loop does the stopping."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger("rfidd").info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# Each subcommand's module, imported only when that command runs (or `--help` lists them):
# importing them all made every `rfidd ...` pay for the whole daemon (rfidd.benchmark imports
# rfidd.app, FastAPI, sllurp...), ~4 s on a loaded machine for a one-line `rfidd hq history`.
LAZY_COMMANDS: dict[str, str] = {
    "hq": "rfidd.hq:hq_command",
    "lifecycle": "rfidd.lifecycle.cli:lifecycle_cli",
    "alerts": "rfidd.lifecycle.alerts_cli:alerts_cli",
    "trace": "rfidd.lifecycle.cli:trace_command",
    "ops": "rfidd.ops:ops_cli",
    "bench": "rfidd.benchmark:bench_command",
    "readers": "rfidd.readers_cli:readers_command",
    "find": "rfidd.readers_cli:find_command",
    "backup": "rfidd.backup:backup_command",
    "restore": "rfidd.backup:restore_command",
}


class _LazyGroup(click.Group):
    """`main`: the commands defined here, plus LAZY_COMMANDS loaded on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context | None, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY_COMMANDS:
            import importlib

            module, attr = LAZY_COMMANDS[cmd_name].split(":")
            cmd: click.Command = getattr(importlib.import_module(module), attr)
            if cmd_name == "ops" and isinstance(cmd, click.Group):
                from rfidd.ops import bench_command as ops_bench_command

                cmd.add_command(ops_bench_command, "bench")  # count and reception figures
            self.add_command(cmd, cmd_name)
        return self.commands.get(cmd_name)


@click.group(cls=_LazyGroup,
             epilog="\b\nExit codes of the commands that talk to a running daemon (ops, "
             "lifecycle):\n  0  done\n  1  the daemon refused the request (its message is "
             "printed)\n  2  cannot reach the daemon (or the command line is wrong)\n"
             "check-config and run exit 78 for a bad configuration.")
@click.version_option(package_name="rfidd")
def main() -> None:
    """rfidd: RFID store operations and traceability daemon."""


@main.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--syntax-only", is_flag=True,
              help="Skip the checks of files named by the config (password, TLS), e.g. when "
              "checking a config on another machine than the one it is for.")
def check_config(file: Path, syntax_only: bool) -> None:
    """Validate FILE; print every error with its key path and line (exit 78 when bad).

    Also opens the files the config names (broker password, TLS CA/certificate/key) as the
    daemon would, unless --syntax-only: as systemd's ExecStartPre it catches them before start.
    """
    try:
        cfg = load_config(file)
    except ConfigError as exc:
        from rfidd.hq.config import config_kind

        if config_kind(file) == "hq":  # [epcis]/[sites], no [site]: not a site's file
            click.echo(f"{file}: this is an HQ configuration ([epcis], [sites], no [site]); "
                       f"check it with: rfidd hq check-config {file}", err=True)
            sys.exit(EX_CONFIG)
        click.echo(f"{file}: {len(exc.errors)} error(s)", err=True)
        for e in exc.errors:
            click.echo(f"  {e}", err=True)
        sys.exit(EX_CONFIG)
    problems = [] if syntax_only else _check_secrets(cfg)
    if problems:
        click.echo(f"{file}: {len(problems)} error(s)", err=True)
        for e in problems:
            click.echo(f"  {e}", err=True)
        click.echo("(the file itself is valid; on another machine than the one it is for, "
                   "--syntax-only skips these checks of the files it names)", err=True)
        sys.exit(EX_CONFIG)
    click.echo(
        f"{file}: OK — site {cfg.site.id} ({cfg.site.kind}), {len(cfg.zones)} zones, "
        f"{len(cfg.readers)} readers"
    )


def _check_secrets(cfg: Config) -> list[str]:
    """What only the machine can tell: the password file and TLS files are there and usable."""
    problems = check_link_files(cfg.mqtt) if cfg.mqtt.enabled else []
    return problems + (check_http_files(cfg) if cfg.http.enabled else [])


def check_http_files(cfg: Config) -> list[str]:
    """The API's token files, users file and TLS certificate load as the daemon loads them."""
    import ssl

    from rfidd.web.auth import AuthSetupError, load_users, read_token_file

    problems = []
    auth = cfg.http.auth
    for t in auth.tokens:
        try:
            read_token_file(t.file, f"http.auth.tokens[{t.name}].file")
        except AuthSetupError as exc:
            problems.append(str(exc))
    if auth.users_file is not None:
        try:
            load_users(auth.users_file)
        except AuthSetupError as exc:
            problems.append(str(exc))
    tls = cfg.http.tls
    if tls.cert_file is not None and tls.key_file is not None:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            problems.append(f"http.tls: {exc}")
    return problems


def check_link_files(mqtt: MqttConfig) -> list[str]:
    """Open the broker password and TLS files as the link would; one message per problem."""
    from rfidd.mqtt_client import MqttSetupError, read_password, tls_context

    problems = []
    try:
        read_password(mqtt)
    except MqttSetupError as exc:
        problems.append(str(exc))
    if mqtt.url.startswith("mqtts://") or mqtt.tls.configured:
        try:
            tls_context(mqtt.tls)
        except (MqttSetupError, OSError, ValueError) as exc:
            problems.append(f"mqtt.tls: {exc}")
    return problems


@main.command()
@click.option("-c", "--config", "config_file", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="TOML configuration file.")
@click.option("--log-level", default="info", show_default=True)
@click.option("--log-format", type=click.Choice(["kv", "json", "text"]), default=None,
              help="key=value (default), JSON or plain text lines; env RFIDD_LOG_FORMAT.")
def run(config_file: Path, log_level: str, log_format: str | None) -> None:
    """Run the daemon until SIGTERM or SIGINT."""
    _setup_logging(log_level, log_format)
    try:
        cfg = load_config(config_file)
    except ConfigError as exc:
        for e in exc.errors:
            logging.getLogger("rfidd").error("config: %s", e)
        sys.exit(EX_CONFIG)
    serve(cfg)


def serve(cfg: Config, log_level: str | None = None) -> None:
    """What `rfidd run` does with a valid config until SIGTERM or SIGINT (the idle benchmark
    runs this too, so it measures the daemon as deployed). `log_level`: set up logging here."""
    if log_level is not None:
        _setup_logging(log_level)
    from rfidd.app import Daemon, tune_gc
    from rfidd.mqtt import HqLinkError
    from rfidd.store.db import DatabaseConfigError, DatabaseError

    daemon = Daemon(cfg, migrate_in_child=True)
    install_signal_handlers(daemon.stop_event)
    try:
        daemon.start()
        tune_gc()
        daemon.run_until_stopped()
    except (HqLinkError, DatabaseConfigError) as exc:
        # Unusable settings (unreadable password file, bad TLS key, unsupported database URL
        # or missing driver): restarting cannot help, so exit EX_CONFIG and systemd stops.
        logging.getLogger("rfidd").error("%s", exc)
        sys.exit(EX_CONFIG)
    except DatabaseError as exc:
        # A database that cannot be opened or written now (down, full disk, permissions being
        # fixed) is temporary: EX_TEMPFAIL, which systemd's Restart= retries.
        logging.getLogger("rfidd").error("%s (temporary failure: exit 75, to be retried)", exc)
        sys.exit(EX_TEMPFAIL)
    finally:
        daemon.stop()


@main.command()
@click.option("--seconds", type=float, default=None,
              help="How long the store runs (default: the scenario's timeline + 3 s, at least "
              "12 s).")
@click.option("--mqtt-url", default=None, help="Also publish to this broker (mqtt://host:port).")
@click.option("--mqtt-protocol", type=click.Choice(["5", "3.1.1"]), default="5",
              show_default=True)
@click.option("--scenario", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Scenario file (default: the packaged demo boutique).")
@click.option("--keep-db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Keep the SQLite database at this path instead of a temporary one.")
@click.option("--http-port", type=int, default=9750, show_default=True,
              help="Port of the staff page and API on 127.0.0.1 (0: any free port).")
@click.option("--log-level", default="warning", show_default=True)
def demo(seconds: float | None, mqtt_url: str | None, mqtt_protocol: str, scenario: Path | None,
         keep_db: Path | None, http_port: int, log_level: str) -> None:
    """Run a simulated store end to end: simulated readers, the daemon, SQLite, optional MQTT."""
    _setup_logging(log_level)
    from rfidd.demo import run_demo

    result = run_demo(seconds=seconds, mqtt_url=mqtt_url, mqtt_protocol=mqtt_protocol,
                      scenario_path=scenario, keep_db=keep_db, http_port=http_port)
    sys.exit(result.exit_code)


@main.command("install-service", context_settings={"ignore_unknown_options": True,
                                                   "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def install_service(args: tuple[str, ...]) -> None:
    """Install rfidd in a venv under /opt/rfidd with its systemd units (--help for options)."""
    from rfidd.install import main as install_main

    sys.exit(install_main(list(args)))


@main.group("users")
def users() -> None:
    """Staff accounts of the page (the file named by http.auth.users_file)."""


@users.command("add")
@click.argument("name")
@click.option("--file", "users_file", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="The users file.")
@click.option("--role", "roles", multiple=True, default=("staff",), show_default=True,
              type=click.Choice(["pos", "staff", "manager", "ops"]))
@click.password_option("--pin", prompt="PIN or password", help="Asked when not given.")
def users_add(name: str, users_file: Path, roles: tuple[str, ...], pin: str) -> None:
    """Add NAME (or give NAME a new PIN); the daemon reads the file at start."""
    from rfidd.config_http import Role
    from rfidd.web.auth import add_user

    if len(pin) < 4:
        raise click.BadParameter("at least 4 characters", param_hint="--pin")
    user = add_user(users_file, name, [Role(r) for r in roles], pin)
    click.echo(f"{user.name}: id {user.id}, roles {', '.join(sorted(user.roles))} "
               f"(restart rfidd to apply)")


if __name__ == "__main__":
    main()
