"""`co2unit-server serve`: the uWSGI command line comes from the ini's [uwsgi] section."""

from __future__ import annotations

from pathlib import Path

from co2unit_server.serve import read_uwsgi_section, serve_environ, system_somaxconn, uwsgi_argv

REPO = Path(__file__).resolve().parent.parent
INI = REPO / "server.ini.example"


def test_example_ini_has_what_operations_need():
    options = dict(read_uwsgi_section(INI))
    assert options["http"] == ":8080"
    assert options["module"] == "co2unit_server.wsgi:app"
    assert options["processes"] == "2"
    assert options["socket-timeout"] == "30"
    for flag in ("master", "die-on-term", "need-app", "strict"):
        assert options[flag] == "true"
    assert int(options["limit-post"]) > 64 * 1024
    assert "harakiri" not in options


def test_argv_replaces_http_with_the_requested_port_and_caps_listen():
    argv = uwsgi_argv(INI, port=9999, host="127.0.0.1", somaxconn=128)
    joined = " ".join(argv[1:])
    assert "--http 127.0.0.1:9999" in joined and ":8080" not in joined
    assert "--listen 128" in joined
    assert "--master" in argv and "true" not in argv
    assert Path(argv[0]).name == "uwsgi"


def test_argv_keeps_the_ini_listen_when_the_kernel_allows():
    assert "--listen 1024" in " ".join(uwsgi_argv(INI, somaxconn=4096))


def test_environment_points_the_app_at_the_ini_and_dirs(tmp_path):
    env = serve_environ({"PATH": "/bin"}, INI, str(tmp_path / "rd"), "var")
    assert env["CO2UNIT_CONFIG"] == str(INI)
    assert env["CO2UNIT_REMOTE_DATA_DIR"] == str(tmp_path / "rd")
    assert Path(env["CO2UNIT_VAR_DIR"]).is_absolute()
    assert env["PATH"] == "/bin"


def test_somaxconn_reading(tmp_path):
    (tmp_path / "somaxconn").write_text("4096\n")
    assert system_somaxconn(tmp_path / "somaxconn") == 4096
    assert system_somaxconn(tmp_path / "missing") is None
