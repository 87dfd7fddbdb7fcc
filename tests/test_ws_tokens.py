"""Streaming devices' tokens: the file, its hashes, `co2unit-server add-device`."""

from __future__ import annotations

import os
import stat

import pytest

from co2unit_server.cli import main
from co2unit_server.core.config import ConfigError
from co2unit_server.gateways import ws_tokens
from co2unit_server.records.users import parse_credentials


def test_a_token_verifies_against_its_hash_only():
    stored = ws_tokens.hash_token("tok")
    assert stored.startswith("sha256$") and "tok" not in stored
    assert ws_tokens.verify_token("tok", stored)
    assert not ws_tokens.verify_token("tok2", stored)
    assert ws_tokens.hash_token("tok") != stored  # salted


@pytest.mark.parametrize("stored", ["", "sha256$", "sha256$x$y", "scrypt$a$b", "a$b$c$d",
                                    "sha256$!!$!!"])
def test_a_malformed_hash_verifies_nothing(stored):
    assert not ws_tokens.verify_token("tok", stored)


def test_add_device_writes_a_private_file_and_replaces_the_devices_line(tmp_path):
    path = tmp_path / "etc" / "ws_tokens"
    path.parent.mkdir()
    path.write_text("# streaming devices\nother:sha256$AAAA$BBBB\n")
    first = ws_tokens.add_device(path, "lab-1")
    second = ws_tokens.add_device(path, "lab-1")
    assert first != second and len(second) >= 43  # 32 random bytes
    text = path.read_text()
    assert text.startswith("# streaming devices\nother:")  # the rest is kept
    entries = parse_credentials(text)
    assert set(entries) == {"other", "lab-1"}
    assert ws_tokens.verify_token(second, entries["lab-1"])
    assert not ws_tokens.verify_token(first, entries["lab-1"])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["ws_tokens"]  # no temp file left


@pytest.mark.parametrize("device", ["", "a:b", "a b", "x" * 65, "../x"])
def test_add_device_refuses_ids_no_hello_can_carry(tmp_path, device):
    with pytest.raises(ValueError):
        ws_tokens.add_device(tmp_path / "tokens", device)


def test_the_tokens_file_is_read_again_when_it_changes(tmp_path):
    path = tmp_path / "tokens"
    tokens = ws_tokens.TokensFile(path)
    assert not tokens.check("lab-1", "x")  # missing file: nobody
    token = ws_tokens.add_device(path, "lab-1")
    assert tokens.check("lab-1", token)
    assert not tokens.check("lab-1", None) and not tokens.check("lab-2", token)
    new = ws_tokens.add_device(path, "lab-1")
    assert tokens.check("lab-1", new) and not tokens.check("lab-1", token)


def test_the_add_device_command_prints_the_token_once(tmp_path, monkeypatch, capsys):
    path = tmp_path / "tokens"
    monkeypatch.setenv("CO2UNIT_WS_TOKENS_FILE", str(path))
    assert main(["add-device", "lab-1"]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert ws_tokens.TokensFile(path).check("lab-1", token)
    assert token not in err and token not in path.read_text()
    assert "lab-1" in err


def test_the_add_device_command_needs_the_setting_and_a_good_id(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CO2UNIT_WS_TOKENS_FILE", raising=False)
    assert main(["add-device", "lab-1"]) == 2
    assert "ws_tokens_file is not set" in capsys.readouterr().err
    monkeypatch.setenv("CO2UNIT_WS_TOKENS_FILE", str(tmp_path / "tokens"))
    assert main(["add-device", "a/b"]) == 2
    assert capsys.readouterr().out == ""


def test_the_tokens_file_check_names_file_and_line_of_a_line_no_device_can_use(tmp_path):
    path = tmp_path / "ws_tokens"
    ws_tokens.check_tokens_file(path)  # missing: add-device creates it
    ws_tokens.add_device(path, "lab-1")
    path.write_text("# devices\n\n" + path.read_text())
    ws_tokens.check_tokens_file(path)
    good = path.read_text()
    for bad, why in [("lab-2 sha256$AAAA$BBBB", "device id 'lab-2 sha256$AAAA$BBBB'"),
                     ("lab-2:sha256$AAAA", "2 '$'-separated part(s), not 3"),
                     ("lab-2:scrypt$AAAA$BBBB", "scheme 'scrypt' is not sha256"),
                     ("lab-2:sha256$!!$BBBB", "not base64")]:
        path.write_text(good + bad + "\n")
        with pytest.raises(ConfigError) as raised:
            ws_tokens.check_tokens_file(path)
        assert str(raised.value).startswith(f"{path}:4: not device:sha256$salt$hash")
        assert why in str(raised.value)
    path.write_bytes(b"lab-\xe9:x\n")
    with pytest.raises(ConfigError, match="cannot read it"):
        ws_tokens.check_tokens_file(path)
