"""Streaming devices' tokens (ws_tokens_file) and `co2unit-server add-device`.

One line per device, `device:sha256$<salt>$<hash>` (salt and hash in base64, the hash
sha256(salt + token)), in the credentials file format of users.py: blank lines and `#`
comments allowed, written atomically with mode 0600, read again by the gateway when it changes.

Why sha256 and not scrypt as for admin passwords: a token is 256 random bits from
secrets.token_urlsafe(32), not something a person chose, so no dictionary or brute force can
reach it and key stretching adds nothing; scrypt would cost 0.2 s of CPU per check, minutes
when a thousand devices reconnect after a gateway restart. The salt keeps equal tokens from
showing in the file.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path

from ..core.config import ConfigError, load_config, required_path
from ..records.users import CredentialsFile, write_credential
from ..records.ws_format import NAME

SCHEME = "sha256"
SALT_BYTES = 16
TOKEN_BYTES = 32


def _digest(token: str, salt: bytes) -> bytes:
    return hashlib.sha256(salt + token.encode("utf-8")).digest()


def hash_token(token: str) -> str:
    """`sha256$salt$hash` for a token, with a fresh random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    encode = base64.b64encode
    return f"{SCHEME}${encode(salt).decode()}${encode(_digest(token, salt)).decode()}"


def _salt_and_hash(stored: str) -> tuple[bytes, bytes]:
    """The salt and hash of a stored `sha256$salt$hash`; ValueError when it is none."""
    parts = stored.split("$")
    if len(parts) != 3:
        raise ValueError(f"{len(parts)} '$'-separated part(s), not 3")
    scheme, salt, expected = parts
    if scheme != SCHEME:
        raise ValueError(f"scheme {scheme!r} is not {SCHEME}")
    try:
        return base64.b64decode(salt, validate=True), base64.b64decode(expected, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64: {exc}") from None


def verify_token(token: str, stored: str) -> bool:
    """Whether `token` matches a stored hash (compared in constant time)."""
    try:
        salt, expected = _salt_and_hash(stored)
    except ValueError:
        return False
    return hmac.compare_digest(_digest(token, salt), expected)


def check_tokens_file(path: Path) -> None:
    """ConfigError, naming file:line, for a tokens file that cannot be read or has a line that
    is no `device:sha256$salt$hash` (a device on it could never connect).

    A missing file is no error: `add-device` creates it; until then every hello is refused.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"ws_tokens_file {path}: cannot read it: {exc}") from None
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        device, _, stored = entry.partition(":")
        try:
            if not NAME.fullmatch(device):
                raise ValueError(f"device id {device!r} must be 1-64 of A-Z a-z 0-9 . _ -")
            _salt_and_hash(stored)
        except ValueError as exc:
            raise ConfigError(f"{path}:{number}: not device:{SCHEME}$salt$hash as add-device "
                              f"writes it: {exc}") from None


class TokensFile(CredentialsFile):
    """The devices' tokens, read again whenever the file changes."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "device tokens file", "every device hello is refused")

    def check(self, device: str, token: str | None) -> bool:
        """Whether `token` is the device's (False without a token or an entry)."""
        stored = self.read()[1].get(device)
        return token is not None and stored is not None and verify_token(token, stored)


def add_device(path: Path, device: str) -> str:
    """Give a device a new token (replacing its old one); return the token."""
    if not NAME.fullmatch(device):
        raise ValueError(f"device id {device!r} must be 1-64 of A-Z a-z 0-9 . _ -")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    write_credential(path, device, hash_token(token))
    return token


# --- `co2unit-server add-device` -------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("device_id", help="the streaming device's id (its hello's device_id)")
    p.add_argument("--ini", help="ini file whose [co2unit] ws_tokens_file to write")


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Give a device a new token in ws_tokens_file; print the token once."""
    config = load_config(environ, Path(args.ini) if args.ini else None)
    path = required_path(config, "ws_tokens_file")
    try:
        token = add_device(path, args.device_id)
    except ValueError as exc:
        print(f"co2unit-server add-device: {exc}", file=sys.stderr)
        return 2
    print(token)  # only here: the file keeps a hash
    print(f"token of {args.device_id!r} written to {path} (shown once; a "
          "running gateway reads it at the next hello)", file=sys.stderr)
    return 0
