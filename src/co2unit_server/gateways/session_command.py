"""`co2unit-server session start|stop|show`: streaming sessions, from the server's shell.

Run on the server with its settings (--ini, CO2UNIT_* environment): the command reaches the
running gateway process through its control socket, var_dir/gateways.sock (mode 0600: only
the server's user and root may use it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.config import load_config
from . import control

NOT_RUNNING_EXIT, REFUSED_EXIT = 2, 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ini", help="ini file whose [co2unit] section to apply")
    actions = p.add_subparsers(dest="action", required=True)
    start = actions.add_parser("start", help="start a session: every connected device is told")
    start.add_argument("--name", help="what the session is (part of its id)")
    actions.add_parser("stop", help="stop the running session: every connected device is told")
    actions.add_parser("show", help="show the running session")


def describe(answer: dict[str, Any]) -> str:
    """The control socket's answer for people."""
    session = answer.get("session")
    if session is None:
        return "no session is running"
    named = f" ({session['name']})" if session.get("name") else ""
    if session["state"] == "started":
        text = f"session {session['id']}{named} running since {session['started_at']}"
    else:
        text = (f"session {session['id']}{named} stopped at {session['stopped_at']} "
                f"(started {session['started_at']})")
    reached = answer.get("devices_reached")
    return text + ("" if reached is None else f"; command sent to {reached} connected "
                   f"device{'' if reached == 1 else 's'}")


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    config = load_config(environ, Path(args.ini) if args.ini else None)
    prog = f"co2unit-server session {args.action}"
    extra = {"name": args.name} if args.action == "start" and args.name else {}
    try:
        answer = control.call(config.control_socket, f"session-{args.action}", **extra)
    except control.GatewayUnavailable as exc:
        print(f"{prog}: the gateway is not running: {exc}", file=sys.stderr)
        return NOT_RUNNING_EXIT
    if not answer.get("ok"):
        print(f"{prog}: refused: {answer.get('error')}", file=sys.stderr)
        return REFUSED_EXIT
    print(describe(answer))
    return 0
