"""`--api URL` in the same places for every command that talks to the daemon: on the group
(`rfidd ops --api URL count list`) and on the command (`rfidd ops count list --api URL`).

The command's `--api` wins, then the group's, then `$RFIDD_API`, then the default. Groups keep
their own `--api` option (it carries `$RFIDD_API`); `accept_api_everywhere` adds a hidden-value
`--api` to each of their commands that lacks one, which rebases the client the group made.
"""

from __future__ import annotations

from typing import Any

import click

from rfidd.client import ApiClient

API_HELP = "Base URL of the daemon's local HTTP API (also after the group; env RFIDD_API)."


def _rebase(obj: Any, url: str) -> Any:
    """The group's context object pointed at `url`: an ApiClient, or the URL itself."""
    if isinstance(obj, ApiClient):
        return ApiClient(url, prefix=obj.prefix, timeout=obj.timeout, hint=obj.hint)
    return url


def _command_api(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.obj = _rebase(ctx.obj, value)


def api_option() -> click.Option:
    return click.Option(["--api"], default=None, expose_value=False, callback=_command_api,
                        is_eager=True, help=API_HELP, metavar="URL")


def accept_api_everywhere(group: click.Group) -> click.Group:
    """Give every command under `group` (subgroups too) an `--api` option unless it has one."""
    for cmd in group.commands.values():
        if not any("--api" in getattr(p, "opts", ()) for p in cmd.params):
            cmd.params.append(api_option())
        if isinstance(cmd, click.Group):
            accept_api_everywhere(cmd)
    return group
