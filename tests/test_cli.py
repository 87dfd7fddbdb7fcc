"""The `co2unit-server` command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from co2unit_server.cli import build_parser, main


def test_settings_lists_every_setting_with_its_value(capsys, tmp_path):
    ini = tmp_path / "server.ini"
    ini.write_text("[co2unit]\nmax_body_bytes = 1234\n")
    assert main(["settings", "--ini", str(ini)]) == 0
    out = capsys.readouterr().out
    assert "max_body_bytes = 1234" in out
    assert "CO2UNIT_PUSH_DIRS, default data,errors" in out


def test_bad_setting_is_a_clear_error_not_a_traceback(tmp_path):
    ini = tmp_path / "server.ini"
    ini.write_text("[co2unit]\nmax_body_bytes = lots\n")
    result = subprocess.run([sys.executable, "-m", "co2unit_server", "settings", "--ini",
                             str(ini)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "max_body_bytes='lots'" in result.stderr and "Traceback" not in result.stderr


def test_serve_refuses_a_missing_ini(capsys, tmp_path):
    assert main(["serve", "--ini", str(tmp_path / "nope.ini")]) == 2
    assert "no such ini file" in capsys.readouterr().err


def test_serve_refuses_bad_uwsgi_option():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--uwsgi-option", "threads"])
