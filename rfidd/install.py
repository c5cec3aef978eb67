"""Install rfidd as a service: a virtual environment under /opt/rfidd and the systemd units.

Debian and Ubuntu refuse `pip install` into the system Python (PEP 668), and the unit must find
`rfidd` where it says. This module uses the standard library only, so it runs from a source
checkout before anything is installed:

    sudo python3 -m rfidd.install                 # or, once installed: rfidd install-service

It creates (or upgrades) the venv, installs rfidd from the checkout into it, writes the units
with their ExecStart pointing at the venv, puts the example configs into /etc/rfidd (never
overwriting a config that is there) and reloads systemd. Options choose other places, so the
whole procedure can be tried as a normal user in a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PREFIX = Path("/opt/rfidd")
DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_CONFIG_DIR = Path("/etc/rfidd")
UNIT_BINARY = "/opt/rfidd/bin/rfidd"  # what the units in systemd/ name
UNITS = {"site": "rfidd.service", "hq": "rfidd-hq.service"}
EXAMPLES = {"site": ("rfidd.example.toml", "rfidd.toml"), "hq": ("hq.example.toml", "hq.toml")}
EX_USAGE = 64
EX_UNAVAILABLE = 69


class InstallError(Exception):
    """A step failed; the message says which and what to do."""


@dataclass
class Plan:
    source: Path
    prefix: Path = DEFAULT_PREFIX
    unit_dir: Path = DEFAULT_UNIT_DIR
    config_dir: Path = DEFAULT_CONFIG_DIR
    roles: tuple[str, ...] = ("site",)
    extras: tuple[str, ...] = ()
    pip_args: tuple[str, ...] = ()
    systemctl: bool = True
    log: list[str] = field(default_factory=list)

    @property
    def binary(self) -> Path:
        return self.prefix / "bin" / "rfidd"


def find_source(start: Path | None = None) -> Path | None:
    """The checkout (or unpacked sdist) holding pyproject and systemd/: the one this module runs
    from, else the current directory (an installed rfidd runs from site-packages)."""
    for base in ((start or Path(__file__)).resolve(), Path.cwd().resolve()):
        for d in (base, *base.parents):
            if (d / "pyproject.toml").is_file() and (d / "systemd" / UNITS["site"]).is_file():
                return d
    return None


def render_unit(text: str, binary: Path, config_dir: Path = DEFAULT_CONFIG_DIR) -> str:
    """The unit with every ExecStart/ExecStartPre pointing at `binary` instead of /opt/rfidd,
    and at the configs and credentials in `config_dir` instead of /etc/rfidd (where the
    example configs were put: a unit reading another directory would not start)."""
    text = text.replace(UNIT_BINARY, str(binary))
    if config_dir != DEFAULT_CONFIG_DIR:
        text = text.replace(f"{DEFAULT_CONFIG_DIR}/", f"{config_dir}/")
    return text


def _run(plan: Plan, argv: Sequence[str]) -> None:
    plan.log.append(" ".join(argv))
    done = subprocess.run(list(argv), capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
        raise InstallError(f"{' '.join(argv[:3])} ... failed (exit {done.returncode}):\n  "
                           + "\n  ".join(tail))


def create_venv(plan: Plan) -> None:
    py = plan.prefix / "bin" / "python"
    if py.exists():
        plan.log.append(f"venv {plan.prefix} exists: upgrading rfidd in it")
        return
    try:
        import ensurepip  # noqa: F401  (Debian ships it in python3-venv)
    except ImportError:
        raise InstallError("python3 cannot create virtual environments here: "
                           "apt-get install python3-venv") from None
    _run(plan, [sys.executable, "-m", "venv", str(plan.prefix)])


def install_package(plan: Plan) -> None:
    spec = str(plan.source) + (f"[{','.join(plan.extras)}]" if plan.extras else "")
    _run(plan, [str(plan.prefix / "bin" / "python"), "-m", "pip", "install", "--quiet",
                "--upgrade", *plan.pip_args, spec])


def write_units(plan: Plan) -> list[Path]:
    plan.unit_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for role in plan.roles:
        name = UNITS[role]
        text = render_unit((plan.source / "systemd" / name).read_text(), plan.binary,
                           plan.config_dir)
        target = plan.unit_dir / name
        target.write_text(text)
        target.chmod(0o644)
        written.append(target)
        plan.log.append(f"wrote {target}")
    return written


def write_configs(plan: Plan) -> None:
    """The example configs next to where the units expect the real ones; never overwrites."""
    plan.config_dir.mkdir(parents=True, exist_ok=True)
    for role in plan.roles:
        example, real = EXAMPLES[role]
        shutil.copyfile(plan.source / "config" / example, plan.config_dir / example)
        plan.log.append(f"wrote {plan.config_dir / example}")
        if not (plan.config_dir / real).exists():
            plan.log.append(f"next: cp {plan.config_dir / example} {plan.config_dir / real} "
                            "and edit it")


def reload_systemd(plan: Plan) -> None:
    if not plan.systemctl or shutil.which("systemctl") is None \
            or not Path("/run/systemd/system").is_dir():
        plan.log.append("systemd not running here (or --no-systemctl): no daemon-reload")
        return
    _run(plan, ["systemctl", "daemon-reload"])


def install(plan: Plan) -> None:
    create_venv(plan)
    install_package(plan)
    if not plan.binary.exists():
        raise InstallError(f"{plan.binary} missing after pip install")
    write_units(plan)
    write_configs(plan)
    reload_systemd(plan)


def parse(argv: Sequence[str] | None = None) -> Plan:
    p = argparse.ArgumentParser(
        prog="rfidd install-service",
        description="Install rfidd as a service: a venv under /opt/rfidd and the systemd units.")
    p.add_argument("--source", type=Path, default=None,
                   help="rfidd source checkout to install (default: the one this runs from)")
    p.add_argument("--prefix", type=Path, default=DEFAULT_PREFIX,
                   help="virtual environment (default %(default)s)")
    p.add_argument("--unit-dir", type=Path, default=DEFAULT_UNIT_DIR,
                   help="where the systemd units go (default %(default)s)")
    p.add_argument("--config-dir", type=Path, default=DEFAULT_CONFIG_DIR,
                   help="where the example configs go (default %(default)s)")
    p.add_argument("--hq", action="store_true", help="also install rfidd-hq.service")
    p.add_argument("--hq-only", action="store_true", help="only rfidd-hq.service")
    p.add_argument("--postgres", action="store_true",
                   help="with the PostgreSQL driver (implied by --hq)")
    p.add_argument("--pip-arg", action="append", default=[],
                   help="extra pip install argument (repeatable), e.g. --pip-arg=--no-index")
    p.add_argument("--no-systemctl", action="store_true", help="do not run systemctl daemon-reload")
    a = p.parse_args(argv)
    source = a.source or find_source()
    if source is None or not (source / "systemd" / UNITS["site"]).is_file():
        p.error("no rfidd source checkout found: pass --source DIR (a git clone or unpacked "
                "sdist holding pyproject.toml and systemd/)")
    roles = ("hq",) if a.hq_only else ("site", "hq") if a.hq else ("site",)
    extras = ("postgres",) if a.postgres or "hq" in roles else ()
    return Plan(source=source.resolve(), prefix=a.prefix.resolve(),
                unit_dir=a.unit_dir.resolve(), config_dir=a.config_dir.resolve(), roles=roles,
                extras=extras, pip_args=tuple(a.pip_arg), systemctl=not a.no_systemctl)


def main(argv: Sequence[str] | None = None, euid: int | None = None) -> int:
    plan = parse(argv)
    system = plan.prefix == DEFAULT_PREFIX or plan.unit_dir == DEFAULT_UNIT_DIR
    if system and (os.geteuid() if euid is None else euid) != 0:
        print(f"installing into {plan.prefix} and {plan.unit_dir} needs root (sudo), or choose "
              "--prefix, --unit-dir and --config-dir", file=sys.stderr)
        return EX_USAGE
    try:
        install(plan)
    except InstallError as exc:
        for line in plan.log:
            print(f"  {line}", file=sys.stderr)
        print(f"install failed: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    for line in plan.log:
        print(line)
    units = " ".join(UNITS[r].removesuffix(".service") for r in plan.roles)
    checks = " && ".join(
        f"{plan.binary} {'hq ' if r == 'hq' else ''}check-config {plan.config_dir / EXAMPLES[r][1]}"
        for r in plan.roles)
    print(f"installed rfidd in {plan.prefix}; then: {checks} && systemctl enable --now {units}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
