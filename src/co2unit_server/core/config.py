"""All settings in one table: defaults, then an ini file's [co2unit] section, then environment.

Settings are data (name, default, help): the same table feeds loading, validation, the
`co2unit-server settings` listing and docs/configuration.md, and a test fails if that file is
not what settings_markdown() generates.
Only the entry points (cli.py, wsgi.py) hand the process environment in; nothing else reads it.
"""

from __future__ import annotations

import configparser
import dataclasses
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INI_SECTION = "co2unit"
# RAM, apart from the data disk: prometheus_client's files are memory-mapped and sparse, and a
# worker writing to a page of one on a full filesystem dies of SIGBUS.
SHM_DIR = Path("/dev/shm")
ENV_PREFIX = "CO2UNIT_"
# Names the environment variable that points at the ini file holding the [co2unit] section.
CONFIG_FILE_ENV = ENV_PREFIX + "CONFIG"


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number (0 = off)")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def _optional_path(raw: str) -> Path | None:
    return Path(raw) if raw.strip() else None


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise ValueError("must be true or false")
    return value in ("1", "true", "yes", "on")


def _share(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be a share between 0 and 1")
    return value


def _name_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _pattern(raw: str) -> str:
    re.compile(raw)
    return raw


def _setting(default: Any, parse: Callable[[str], Any], help: str) -> Any:
    return field(default=default, metadata={"parse": parse, "help": help})


@dataclass(frozen=True)
class Config:
    """Everything the server and toolchain can be told; see SETTINGS for the help texts."""

    remote_data_dir: Path = _setting(
        Path("remote_data"), Path,
        "Root of what units push (`<hw_id>/data`, `<hw_id>/errors`) and pull (`<hw_id>/updates`).")
    var_dir: Path = _setting(
        Path("var"), Path,
        "Runtime state: `pings/` logs, `db.sqlite3`, generated pages in `pub/`, push `locks/`.")
    max_body_bytes: int = _setting(
        64 * 1024, _positive_int, "Largest request body accepted; larger gets 413.")
    max_file_bytes: int = _setting(
        32 * 1024 * 1024, _positive_int, "Largest pushed file; a write past it gets 413.")
    min_free_bytes: int = _setting(
        64 * 1024 * 1024, _positive_int,
        "Free space the data disk must keep; below it pushes get 507 and nothing is written, "
        "the WebSocket gateway refuses new readings (STORAGE_FULL, close 1013), the TCP "
        "gateway stops accepting and the pull collector pauses, until there is room again.")
    push_dirs: tuple[str, ...] = _setting(
        ("data", "errors"), _name_list,
        "Comma-separated top-level directories units may push into (never `updates`).")
    hw_id_pattern: str = _setting(
        r"co2unit-[0-9a-f]{12}", _pattern, "Regular expression a hardware ID must fully match.")
    ping_rotate_bytes: int = _setting(
        100 * 1024, _positive_int,
        "Size at which the ping log moves on to the next pings-NNNN.tsv.")
    recent_pings: int = _setting(
        20, _positive_int, "How many pings /status/alive/recent shows.")
    db_busy_timeout_ms: int = _setting(
        2000, _positive_int,
        "How long the ping writer waits for a locked database before giving up on a batch "
        "(the TSV lines are kept).")
    late_after_hours: float = _setting(
        26.0, _positive_float,
        "A unit not pinged for this long is `late` on the fleet page, in the API and for "
        "`co2unit-server check`.")
    silent_after_hours: float = _setting(
        72.0, _positive_float, "A unit not pinged for this long is `silent`.")
    admin_users_file: Path | None = _setting(
        None, _optional_path,
        "File of admin users and salted password hashes (`co2unit-server add-user`); when set, "
        "`/`, `/fleet`, `/live`, `/api`, `/metrics` and the status pages need HTTP basic auth. "
        "Empty: open. The unit endpoints are always open.")
    known_units_only: bool = _setting(
        False, _bool,
        "Refuse pushes and update pulls (403) of hw_ids in no deployment; their pings are "
        "still recorded and shown as `unknown`.")
    loss_warn_share: float = _setting(
        0.01, _share,
        "Share of a unit's readings rows the import may drop before the CO2 summary page "
        "highlights the unit in its data-quality table (0.01 = 1 %).")
    gateway_host: str = _setting(
        "", str,
        "Address the gateways listen on; empty: every address.")
    tcp_gateway_port: int = _setting(
        0, _port,
        "Port of the binary TCP gateway for the ESP8266 weather stations (the devices' default "
        "is 5001); 0: off.")
    tcp_read_timeout_seconds: float = _setting(
        30.0, _positive_float,
        "How long the TCP gateway waits for a device to finish its packet (read to EOF); what "
        "came until then is kept, marked bad.")
    tcp_max_packet_bytes: int = _setting(
        65544, _positive_int,
        "Largest TCP packet read (9 + the largest bytesReady); a longer one is kept up to "
        "here, marked bad, and the connection closed.")
    tcp_device_types: tuple[str, ...] = _setting(
        ("1=tsl2561-si7021",), _name_list,
        "Comma-separated deviceID=record format pairs: which parser reads whose records. A "
        "packet from an ID not listed is kept raw and shown, and parsed by a later import "
        "once its ID is listed.")
    ws_gateway_port: int = _setting(
        0, _port,
        "Port of the WebSocket gateway for streaming devices (path `/`); 0: off.")
    ws_max_message_bytes: int = _setting(
        65536, _positive_int,
        "Largest WebSocket message accepted; a larger frame closes the connection (1009).")
    ws_allowed_origins: tuple[str, ...] = _setting(
        (), _name_list,
        "Comma-separated Origin values a WebSocket client may send (browsers send one); "
        "empty: only clients that send no Origin (devices).")
    ws_keepalive_seconds: float = _setting(
        20.0, _positive_float,
        "WebSocket ping interval; a device that does not answer a ping within it is dropped.")
    ws_max_errors_per_minute: int = _setting(
        30, _positive_int,
        "Bad messages a WebSocket device may send in a minute before it is disconnected "
        "(1008).")
    ws_full_retry_seconds: float = _setting(
        60.0, _positive_float,
        "While the data disk is below min_free_bytes, how long a WebSocket device must wait "
        "before it connects again (it is told in the STORAGE_FULL error and the 1013 close "
        "reason, and adds a random 0-50 %).")
    ws_tokens_file: Path | None = _setting(
        None, _optional_path,
        "File of streaming device ids and salted token hashes (`co2unit-server add-device`); "
        "when set, `hello` must carry a valid `token`, else error and close 4401. Empty: "
        "no tokens.")
    pull_devices_file: Path | None = _setting(
        None, _optional_path,
        "TSV of polled devices (name, URL, interval in seconds) for the HTTP pull collector; "
        "empty: off.")
    pull_timeout_seconds: float = _setting(
        5.0, _positive_float,
        "How long one poll may take (connect and answer) before it counts as failed.")
    pull_refresh_seconds: float = _setting(
        1.3, _positive_float,
        "How often a polled device refreshes its values: the collector never polls a device "
        "again sooner than this (a shorter interval in the devices file is polled at this, "
        "with a warning).")
    pull_max_backoff_seconds: float = _setting(
        300.0, _positive_float,
        "Longest wait before polling a device again after failures (the wait doubles from its "
        "interval up to this).")
    raw_log_rotate_bytes: int = _setting(
        1024 * 1024, _positive_int,
        "Size at which a gateway device's raw log moves on to the next NNNN.log.")
    raw_log_sync_ms: float = _setting(
        5.0, _positive_float,
        "Group commit window of the gateways' raw logs: what arrived within it is fsynced "
        "together before it is stored in the database.")
    metrics_files_dir: Path | None = _setting(
        None, _optional_path,
        "Where the uWSGI workers' prometheus_client keeps its memory-mapped counting files "
        "(emptied at each start). Empty: `/dev/shm/co2unit-metrics-<hash of var_dir>` (RAM: "
        "a full data disk cannot kill a worker with SIGBUS), or `var_dir/metrics` where "
        "there is no /dev/shm. Set it elsewhere only to a filesystem that cannot fill.")
    log_level: str = _setting(
        "INFO", str.upper, "Python logging level of the server (DEBUG, INFO, WARNING, ERROR).")

    @property
    def db_path(self) -> Path:
        return self.var_dir / "db.sqlite3"

    @property
    def pings_dir(self) -> Path:
        return self.var_dir / "pings"

    @property
    def pub_dir(self) -> Path:
        return self.var_dir / "pub"

    @property
    def locks_dir(self) -> Path:
        return self.var_dir / "locks"

    @property
    def gateways_enabled(self) -> bool:
        """True when `co2unit-server gateways` has something to run."""
        return bool(self.tcp_gateway_port or self.pull_devices_file or self.ws_gateway_port)

    @property
    def control_socket(self) -> Path:
        """The gateway process's control socket (sessions, live status) for CLI and app."""
        return self.var_dir / "gateways.sock"

    @property
    def gateway_health_file(self) -> Path:
        """The running gateway process's problems, for `check` (records/gateway_health.py)."""
        return self.var_dir / "gateways-health.json"

    @property
    def metrics_dir(self) -> Path:
        """prometheus_client's multiprocess files (emptied when the server starts): see
        metrics_files_dir."""
        if self.metrics_files_dir is not None:
            return self.metrics_files_dir
        if not SHM_DIR.is_dir():
            return self.var_dir / "metrics"
        # One directory per var_dir: servers side by side (tests) must not share counters.
        key = hashlib.sha1(str(self.var_dir.resolve()).encode()).hexdigest()[:12]
        return SHM_DIR / f"co2unit-metrics-{key}"

    def validate(self) -> Config:
        """Refuse settings that would make the server unsafe."""
        if "updates" in self.push_dirs:
            raise ConfigError("push_dirs must not contain 'updates': units install what is there")
        for name in self.push_dirs:
            if "/" in name or name in ("", ".", ".."):
                raise ConfigError(f"push_dirs entry {name!r} is not a plain directory name")
        try:
            device_type_names(self.tcp_device_types)
        except ValueError as exc:
            raise ConfigError(f"tcp_device_types: {exc}") from None
        return self


SETTINGS: tuple[dataclasses.Field, ...] = dataclasses.fields(Config)
# The TCP devices' record formats by name: the setting is checked here, where every process
# loads it, and tcp_format holds how each reads (its test keeps the two in step).
TCP_RECORD_FORMATS = ("tsl2561-si7021",)


def device_type_names(entries: Iterable[str]) -> dict[int, str]:
    """deviceID -> record format name from the `tcp_device_types` setting ('1=tsl2561-si7021',
    ...); ValueError saying which entry is wrong."""
    names = {}
    for entry in entries:
        raw_id, sep, name = entry.partition("=")
        if not sep or not raw_id.strip().isdigit() or not 0 <= int(raw_id) <= 255:
            raise ValueError(f"{entry!r} is not deviceID=format (deviceID 0-255)")
        if name.strip() not in TCP_RECORD_FORMATS:
            raise ValueError(f"{entry!r}: no record format {name.strip()!r} "
                             f"(known: {', '.join(sorted(TCP_RECORD_FORMATS))})")
        names[int(raw_id)] = name.strip()
    return names


def env_name(setting: str) -> str:
    return ENV_PREFIX + setting.upper()


def required_path(config: Config, setting: str) -> Path:
    """A file setting a command cannot do without; ConfigError saying where to set it."""
    path = getattr(config, setting)
    if path is None:
        raise ConfigError(f"{setting} is not set (in the ini's [co2unit] section or "
                          f"{env_name(setting)})")
    return path


def _parse(name: str, raw: str, source: str) -> Any:
    setting = next(s for s in SETTINGS if s.name == name)
    try:
        return setting.metadata["parse"](raw)
    except (ValueError, re.error) as exc:
        raise ConfigError(f"{source}: setting {name}={raw!r}: {exc}") from exc


def read_ini(path: Path) -> dict[str, str]:
    """Return the [co2unit] section of an ini file (uWSGI's own [uwsgi] section is ignored)."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    if not parser.read(path):
        raise ConfigError(f"cannot read config file {path}")
    if not parser.has_section(INI_SECTION):
        return {}
    known = {s.name for s in SETTINGS}
    section = dict(parser.items(INI_SECTION))
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) in [{INI_SECTION}]: {', '.join(unknown)}")
    return section


def load_config(
    environ: Mapping[str, str] | None = None,
    ini_path: Path | None = None,
    **overrides: Any,
) -> Config:
    """Build the Config: defaults < ini [co2unit] < CO2UNIT_* environment < overrides."""
    environ = environ or {}
    values: dict[str, Any] = {}
    if ini_path is None and environ.get(CONFIG_FILE_ENV):
        ini_path = Path(environ[CONFIG_FILE_ENV])
    if ini_path is not None:
        for name, raw in read_ini(ini_path).items():
            values[name] = _parse(name, raw, str(ini_path))
    for setting in SETTINGS:
        raw = environ.get(env_name(setting.name))
        if raw is not None and raw != "":
            values[setting.name] = _parse(setting.name, raw, env_name(setting.name))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Config(**values).validate()


def describe_settings() -> list[tuple[str, str, str, str]]:
    """Rows of (setting, environment variable, default, help) for docs and the CLI."""
    rows = []
    for setting in SETTINGS:
        default = setting.default
        shown = ",".join(default) if isinstance(default, tuple) else str(default)
        rows.append((setting.name, env_name(setting.name), shown, setting.metadata["help"]))
    return rows


def settings_markdown() -> str:
    """The settings table as Markdown, the generated part of docs/configuration.md."""
    lines = ["| Setting | Environment | Default | Meaning |", "|---|---|---|---|"]
    for name, env, default, help_text in describe_settings():
        shown = f"`{default}`" if default not in ("", "None") else "(empty)"
        meaning = help_text.replace("|", "\\|")  # a bar would end the table's cell
        lines.append(f"| `{name}` | `{env}` | {shown} | {meaning} |")
    return "\n".join(lines) + "\n"
