"""The `co2unit-server` command line: one subcommand per job."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from . import serve
from .core.config import ConfigError, describe_settings, load_config, settings_markdown
from .gateways import process as gateways
from .gateways import session_command, ws_tokens
from .records import users
from .simulator import command as simulate
from .simulator import nodemcu as simulate_pull
from .simulator import tcp_devices, ws_devices
from .status import check
from .toolchain import build, export
from .updates import delivery
from .updates import publish as update_publish

DEFAULT_INI = Path("server.ini.example")


def _serve(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    ini = Path(args.ini)
    if not ini.exists():
        print(f"co2unit-server serve: no such ini file: {ini}", file=sys.stderr)
        return 2
    pull_devices = str(Path(args.pull_devices).resolve()) if args.pull_devices else None
    env = serve.serve_environ(environ, ini, args.remote_data_dir, args.var_dir, {
        "tcp_gateway_port": args.tcp_port, "pull_devices_file": pull_devices,
        "ws_gateway_port": args.ws_port})
    try:
        # Fail here, with a clear message, rather than in a uWSGI worker or in a gateway
        # process that uWSGI would start again and again.
        config = load_config(env)
        if config.gateways_enabled:
            gateways.check_gateways(config, args.port or serve.ini_http_port(ini))
    except ConfigError as exc:
        print(f"co2unit-server serve: {exc}", file=sys.stderr)
        return 2
    env = serve.metrics_environ(env, config.metrics_dir)
    extra = dict(option.split("=", 1) for option in args.uwsgi_option)
    daemons = [serve.gateway_daemon()] if config.gateways_enabled else []
    argv = serve.uwsgi_argv(ini, args.port, args.host, serve.system_somaxconn(), extra,
                            daemons)
    print("co2unit-server serve:", " ".join(argv), file=sys.stderr)
    serve.exec_uwsgi(argv, env)
    return 0  # not reached


def _add_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ini", default=str(DEFAULT_INI),
                   help="uWSGI ini with [uwsgi] and [co2unit] sections (default: %(default)s)")
    p.add_argument("--port", type=int, help="port to listen on (default: the ini's http)")
    p.add_argument("--host", default="", help="address to bind with --port (default: all)")
    p.add_argument("--remote-data-dir", help="overrides remote_data_dir")
    p.add_argument("--var-dir", help="overrides var_dir")
    p.add_argument("--tcp-port", help="overrides tcp_gateway_port (and starts the gateways)")
    p.add_argument("--pull-devices", help="overrides pull_devices_file (and starts the gateways)")
    p.add_argument("--ws-port", help="overrides ws_gateway_port (and starts the gateways)")
    p.add_argument("--uwsgi-option", action="append", default=[], metavar="KEY=VALUE",
                   type=_key_value, help="set or replace one [uwsgi] option (repeatable)")


def _key_value(raw: str) -> str:
    if "=" not in raw:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {raw!r}")
    return raw


def _settings(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if args.markdown:
        print(settings_markdown(), end="")
        return 0
    cfg = load_config(environ, Path(args.ini) if args.ini else None)
    for name, env, default, help_text in describe_settings():
        value = getattr(cfg, name)
        shown = ",".join(value) if isinstance(value, tuple) else str(value)
        print(f"{name} = {shown}\n    {env}, default {default}: {help_text}")
    return 0


def _add_settings(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ini", help="ini file whose [co2unit] section to apply")
    p.add_argument("--markdown", action="store_true",
                   help="print the settings table with defaults as Markdown (the generated "
                   "part of docs/configuration.md) instead of the effective values")


# (name, help, add_arguments, run): each later capability adds its row here.
COMMANDS: list[tuple[str, str, Callable, Callable]] = [
    ("serve", "run the unit server under uWSGI", _add_serve, _serve),
    ("settings", "show every setting, its effective value and documentation",
     _add_settings, _settings),
    ("simulate", "run simulated units against a server and verify nothing was lost",
     simulate.add_arguments, simulate.run),
    ("simulate-tcp", "run simulated weather stations against the TCP gateway and verify",
     tcp_devices.add_arguments, tcp_devices.run),
    ("simulate-pull", "run emulated NodeMCU devices against the pull collector and verify "
     "every answer is stored once, on schedule", simulate_pull.add_arguments, simulate_pull.run),
    ("simulate-ws", "run simulated streaming devices against the WebSocket gateway and verify "
     "every acknowledged reading is stored once", ws_devices.add_arguments, ws_devices.run),
    ("import", "import new readings, error logs, pings, gateway raw logs and deployments into "
     "DB_DIR/db.sqlite3",
     build.add_source_arguments, build.run_import_command),
    ("build", "import, then redraw the plots and summary pages whose data changed",
     build.add_build_arguments, build.run_build_command),
    ("export", "write readings or pings with their deployment as CSV or JSON (UTC, streamed)",
     export.add_arguments, export.run),
    ("add-user", "add or replace an admin user (password hashed) in admin_users_file",
     users.add_arguments, users.run),
    ("add-device", "give a WebSocket streaming device a new token (printed once, hashed in "
     "ws_tokens_file)", ws_tokens.add_arguments, ws_tokens.run),
    ("publish-update", "publish a nickname, conf patch or code update to units, atomically",
     update_publish.add_arguments, update_publish.run),
    ("updates", "show each unit's updates: published, downloading, delivered, confirmed",
     delivery.add_arguments, delivery.run),
    ("gateways", "run the enabled gateways (TCP packets, HTTP-polled devices, WebSocket "
     "streams) until stopped",
     gateways.add_arguments, gateways.run),
    ("session", "start, stop or show the streaming devices' session (in the running gateway)",
     session_command.add_arguments, session_command.run),
    ("check", "check the deployed units and watched gateway devices for cron or Nagios: exit 0 "
     "alive, 1 late, 2 silent, 3 cannot tell", check.add_check_arguments,
     check.run_check),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="co2unit-server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text, add_arguments, run in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args, os.environ)
    except ConfigError as exc:
        print(f"co2unit-server {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
