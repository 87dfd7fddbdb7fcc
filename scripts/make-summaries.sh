#!/bin/sh
# Build the database, plots and summary pages of a server install, where the server serves
# them (/status/alive/summary, /data/co2/summary). Extra arguments go to make, e.g.
# `scripts/make-summaries.sh all` or `scripts/make-summaries.sh PLOT_ARGS=--force`.
# Cron, every 10 minutes:  */10 * * * * /path/to/co2unit-server/scripts/make-summaries.sh -s
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
# The server's settings (loss_warn_share) apply to the toolchain too.
if [ -z "${CO2UNIT_CONFIG:-}" ] && [ -f "$repo/server.ini" ]; then
    export CO2UNIT_CONFIG="$repo/server.ini"
fi
exec make -C "$repo/database" DATA_DIR="$repo/remote_data" DB_DIR="$repo/var" \
    WEB_PUB_DIR="$repo/var/pub" "$@"
