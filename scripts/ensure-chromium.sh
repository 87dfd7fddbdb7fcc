#!/bin/sh
# `make test` needs headless Chromium for the page tests (Debian's chromium package). Install it
# when it is missing and this user can (root, or sudo without a password); otherwise stop with
# the one command that installs it.
set -eu
command -v chromium >/dev/null 2>&1 && exit 0
fix="sudo apt-get install -y --no-install-recommends chromium fonts-dejavu-core"
give_up() {
    echo "make test: headless Chromium is missing ($1). Install it with:" >&2
    echo "    $fix" >&2
    exit 1
}
command -v apt-get >/dev/null 2>&1 || give_up "no apt-get here to install it"
if [ "$(id -u)" -eq 0 ]; then
    as_root=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root="sudo -n"
else
    give_up "installing it needs root"
fi
echo "make test: installing headless Chromium for the page tests (apt-get, once)"
export DEBIAN_FRONTEND=noninteractive
$as_root apt-get update -qq || give_up "apt-get update failed"
$as_root apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null \
    || give_up "apt-get install failed"
command -v chromium >/dev/null 2>&1 || give_up "installed, but not on PATH"
