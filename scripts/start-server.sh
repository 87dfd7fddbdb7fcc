#!/usr/bin/env bash
# Start co2unit-server under uWSGI in the foreground (what the systemd unit runs).
# Uses server.ini beside the repository's top, or server.ini.example when there is none;
# CO2UNIT_* environment variables override the ini's [co2unit] section.
set -euo pipefail
top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$top"
ini="${CO2UNIT_INI:-server.ini}"
[ -f "$ini" ] || ini=server.ini.example
if [ ! -x .venv/bin/co2unit-server ]; then
    echo "start-server.sh: no .venv here; run 'make venv' (or 'make run') once in $top" >&2
    exit 1
fi
exec .venv/bin/co2unit-server serve --ini "$ini" "$@"
