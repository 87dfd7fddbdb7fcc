"""Configuration: defaults, ini, environment, validation, and that every setting is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from co2unit_server.core.config import (
    SETTINGS,
    Config,
    ConfigError,
    describe_settings,
    env_name,
    load_config,
    read_ini,
)

REPO = Path(__file__).resolve().parent.parent


def test_defaults():
    cfg = load_config({})
    assert cfg == Config()
    assert cfg.max_body_bytes == 64 * 1024
    assert cfg.max_file_bytes == 32 * 1024 * 1024
    assert cfg.push_dirs == ("data", "errors")
    assert cfg.hw_id_pattern == r"co2unit-[0-9a-f]{12}"
    assert cfg.db_path == Path("var/db.sqlite3")


def test_ini_then_environment_then_overrides(tmp_path):
    ini = tmp_path / "server.ini"
    ini.write_text("[uwsgi]\nhttp = :8080\n[co2unit]\nmax_body_bytes = 1000\n"
                   "push_dirs = data, errors, logs\nvar_dir = /srv/var\n")
    env = {"CO2UNIT_CONFIG": str(ini), "CO2UNIT_MAX_BODY_BYTES": "2000"}
    cfg = load_config(env, var_dir=Path("/elsewhere"))
    assert cfg.max_body_bytes == 2000
    assert cfg.push_dirs == ("data", "errors", "logs")
    assert cfg.var_dir == Path("/elsewhere")


@pytest.mark.parametrize("env", [
    {"CO2UNIT_MAX_BODY_BYTES": "lots"},
    {"CO2UNIT_MAX_FILE_BYTES": "-1"},
    {"CO2UNIT_HW_ID_PATTERN": "co2unit-[0-9"},
    {"CO2UNIT_PUSH_DIRS": "data,updates"},
    {"CO2UNIT_PUSH_DIRS": "data,../etc"},
])
def test_unusable_values_are_refused_with_the_setting_named(env):
    with pytest.raises(ConfigError):
        load_config(env)


def test_unknown_ini_setting_is_refused(tmp_path):
    ini = tmp_path / "server.ini"
    ini.write_text("[co2unit]\nmax_body_byte = 10\n")
    with pytest.raises(ConfigError, match="max_body_byte"):
        read_ini(ini)


def test_missing_ini_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config({}, ini_path=tmp_path / "nope.ini")


def test_every_setting_is_documented_in_readme_and_example_ini():
    readme = (REPO / "README.md").read_text()
    example = read_ini(REPO / "server.ini.example")
    for name, env, _default, help_text in describe_settings():
        assert help_text
        assert f"`{name}`" in readme, f"README does not document {name}"
        assert env in readme, f"README does not name {env}"
        assert name in example, f"server.ini.example lacks {name}"
    assert len(describe_settings()) == len(SETTINGS)


def test_example_ini_values_are_the_defaults():
    example = load_config({}, ini_path=REPO / "server.ini.example")
    assert example == Config()
    assert env_name("var_dir") == "CO2UNIT_VAR_DIR"
