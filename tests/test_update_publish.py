"""`co2unit-server publish-update`: names, per-unit files, refusals, atomicity and fsync."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import date
from pathlib import Path

import pytest

from co2unit_server.cli import main
from co2unit_server.database import db
from co2unit_server.updates import publish as update_publish
from co2unit_server.updates.publish import PublishError, UpdateContent, next_name, publish

from conftest import HW_ID, OTHER_HW_ID

DAY = date(2026, 11, 29)
THIRD_HW_ID = "co2unit-cccccccccccc"


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path below root (None for a directory) with its bytes."""
    return {p.relative_to(root).as_posix(): None if p.is_dir() else p.read_bytes()
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    """remote_data and var in tmp_path, as the command's settings; two known units."""
    monkeypatch.setenv("CO2UNIT_REMOTE_DATA_DIR", str(tmp_path / "remote_data"))
    monkeypatch.setenv("CO2UNIT_VAR_DIR", str(tmp_path / "var"))
    for hw_id in (HW_ID, OTHER_HW_ID):
        (tmp_path / "remote_data" / hw_id / "data").mkdir(parents=True)
    return tmp_path


def updates_of(site: Path, hw_id: str) -> Path:
    return site / "remote_data" / hw_id / "updates"


def write_json(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value))
    return path


@pytest.mark.parametrize("existing, expected", [
    ([], "update-2026-11-29a"),
    (["update-2026-11-28c"], "update-2026-11-29a"),
    (["update-2026-11-29a", "update-2026-11-29b"], "update-2026-11-29c"),
    (["update-2026-11-29z"], "update-2026-11-29za"),
    (["update-2026-11-29za"], "update-2026-11-29zb"),
    (["update-2099-01-01a"], "update-2099-01-01b"),  # a date in the future
    (["update-2026-11-29"], "update-2026-11-29a"),
    (["update-foo"], "update-fooa"),
    (["update-2026-11-29a-old"], "update-2026-11-29a-olda"),
    (["README", "update-1", "Update-9"], "update-2026-11-29a"),  # upper case sorts first
])
def test_names_sort_after_every_existing_entry(existing, expected):
    name = next_name(existing, DAY)
    assert name == expected
    assert name.startswith("update-") and all(name > e for e in existing)


@pytest.mark.parametrize("odd", ["zzz", "~backup", "updates"])
def test_an_entry_sorting_after_every_update_name_is_refused(odd):
    with pytest.raises(PublishError, match="sorts after every update- name"):
        next_name(["update-2026-11-29a", odd], DAY)


def test_one_name_for_all_units_sorting_after_each_unit_s_entries(site):
    (updates_of(site, HW_ID) / "update-2026-11-29c").mkdir(parents=True)
    (updates_of(site, OTHER_HW_ID) / "update-2026-11-30a").mkdir(parents=True)
    (updates_of(site, OTHER_HW_ID) / ".tmp-update-2099-01-01a-x").mkdir()  # hidden: ignored
    plan = publish(site / "remote_data", [HW_ID, OTHER_HW_ID], UpdateContent(nickname="n-1"),
                   day=DAY)
    assert plan.name == "update-2026-11-30b"
    for hw_id in (HW_ID, OTHER_HW_ID):
        assert (updates_of(site, hw_id) / plan.name / "conf-patch" / "ou-id.json").is_file()


def test_each_unit_gets_an_ou_id_patch_with_its_own_hw_id(site, capsys):
    comm = write_json(site / "ou-comm-config.json", {"ntp_host": "pool.ntp.org",
                                                     "sync_dest": ["http://10.0.0.1:8080"]})
    assert main(["publish-update", "--unit", HW_ID, "--unit", OTHER_HW_ID,
                 "--nickname", "varanger-07", "--conf-patch", str(comm)]) == 0
    out = capsys.readouterr().out
    name = out.split()[0]
    assert name.startswith("update-") and HW_ID in out and OTHER_HW_ID in out
    for hw_id in (HW_ID, OTHER_HW_ID):
        update = updates_of(site, hw_id) / name
        assert tree(update).keys() == {"conf-patch", "conf-patch/ou-id.json",
                                       "conf-patch/ou-comm-config.json"}
        patch = json.loads((update / "conf-patch" / "ou-id.json").read_text())
        assert patch == {"hw_id": hw_id, "site_code": "varanger-07"}
        assert json.loads((update / "conf-patch" / "ou-comm-config.json").read_text()) == {
            "ntp_host": "pool.ntp.org", "sync_dest": ["http://10.0.0.1:8080"]}
    assert not list((site / "remote_data").rglob(".tmp-*"))


def test_flash_with_yes_copies_the_code_and_lists_it_first(site, capsys):
    flash = site / "code"
    (flash / "lib").mkdir(parents=True)
    (flash / "main.py").write_bytes(b"print('v2')\n")
    (flash / "lib" / "util.mpy").write_bytes(os.urandom(3000))
    assert main(["publish-update", "--unit", HW_ID, "--flash", str(flash), "--yes"]) == 0
    out = capsys.readouterr().out
    assert "flash/main.py" in out and "flash/lib/util.mpy" in out
    update = next(updates_of(site, HW_ID).iterdir())
    assert (update / "flash" / "lib" / "util.mpy").read_bytes() == (
        flash / "lib" / "util.mpy").read_bytes()
    assert sorted(tree(update)) == ["flash", "flash/lib", "flash/lib/util.mpy", "flash/main.py"]


REFUSALS = {
    "bad JSON": (["--conf-patch", "{file}"], "ou-comm-config.json", '{"ntp_host": ', "not valid "
                 "JSON"),
    "not an object": (["--conf-patch", "{file}"], "ou-comm-config.json", '["x"]', "JSON object"),
    "unknown conf file": (["--conf-patch", "{file}"], "other.json", '{"a": 1}', "reads only"),
    "schedule.json": (["--conf-patch", "{file}"], "schedule.json", '{"a": 1}', "built-in "
                      "schedule"),
    "foreign hw_id": (["--conf-patch", "{file}"], "ou-id.json",
                      json.dumps({"hw_id": OTHER_HW_ID}), "not co2unit-30aea42a50bc's own"),
    "unknown key": (["--conf-patch", "{file}"], "ou-comm-config.json", '{"wifi": 1}',
                    "does not read key 'wifi'"),
    "bad sync_dest": (["--conf-patch", "{file}"], "ou-comm-config.json",
                      '{"sync_dest": "https://x"}', "sync_dest must be"),
    "NaN": (["--conf-patch", "{file}"], "ou-comm-config.json", '{"send_chunk_size": NaN}',
            "not valid JSON"),
    "nickname and ou-id.json": (["--nickname", "a", "--conf-patch", "{file}"], "ou-id.json",
                                '{"site_code": "b"}', "not both"),
    "unsafe nickname": (["--nickname", "my site&x"], None, None, "unencoded"),
    "flash without --yes": (["--flash", "{dir}"], None, None, "add --yes"),
    "nothing to publish": ([], None, None, "nothing to publish"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_bad_input_is_refused_with_one_line_and_nothing_written(site, capsys, case):
    args, file_name, text, message = REFUSALS[case]
    (site / "code").mkdir()
    (site / "code" / "main.py").write_text("x = 1\n")
    file = site / (file_name or "unused.json")
    if text is not None:
        file.write_text(text)
    args = [a.format(file=file, dir=site / "code") for a in args]
    before = tree(site / "remote_data")
    assert main(["publish-update", "--unit", HW_ID, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert tree(site / "remote_data") == before


@pytest.mark.parametrize("args, message", [
    ([], "no target"),
    (["--unit", "co2unit-ffffffffffff"], "unknown unit co2unit-ffffffffffff"),
    (["--unit", "not-a-unit"], "not a hardware ID"),
    (["--all"], "no deployments"),
])
def test_missing_or_unknown_targets_are_refused(site, capsys, args, message):
    before = tree(site / "remote_data")
    assert main(["publish-update", "--nickname", "x", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert tree(site / "remote_data") == before


def test_a_name_a_unit_downloaded_before_is_never_reused(site, capsys):
    # The update was deleted on the server, but the unit has it and would skip the same name.
    conn = db.connect(site / "var" / "db.sqlite3")
    db.init_schema(conn)
    conn.execute(db.INSERT_DOWNLOAD, ("2026-11-29T03:00:00.000000", "update-2099-01-01a", None,
                                      HW_ID, 10, 10, 1))
    conn.close()
    assert main(["publish-update", "--unit", HW_ID, "--nickname", "x"]) == 0
    assert capsys.readouterr().out.split()[0] == "update-2099-01-01b"
    assert [p.name for p in updates_of(site, HW_ID).iterdir()] == ["update-2099-01-01b"]


def test_dry_run_shows_the_update_and_writes_nothing(site, capsys):
    before = tree(site)
    assert main(["publish-update", "--unit", HW_ID, "--nickname", "x-1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "update-" in out and HW_ID in out and '"site_code": "x-1"' in out
    assert "nothing written" in out
    assert tree(site) == before


def test_all_site_and_tier_select_the_current_deployments(site, capsys):
    conn = db.connect(site / "var" / "db.sqlite3")
    db.init_schema(conn)
    conn.executemany("INSERT INTO deploy_durations_tiered VALUES (?, ?, ?, ?, ?, ?, ?, NULL)", [
        (HW_ID, "a", "site-1", 3, "deployed", "2026-01-01", None),
        (OTHER_HW_ID, "b", "site-2", 2, "deployed", "2026-01-01", None),
        (THIRD_HW_ID, "c", "site-1", 3, "deployed", "2026-01-01", "2026-02-01"),  # ended
        ("co2unit-dddddddddddd", "d", "site-1", 3, "en_route", "2026-01-01", None),
        ("co2unit-eeeeeeeeeeee", "e", "site-1", 3, "deployed", "2099-01-01", None),  # future
    ])
    conn.close()

    def targets(*args: str) -> list[str]:
        assert main(["publish-update", "--nickname", "x", "--dry-run", *args]) == 0
        return sorted(set(capsys.readouterr().out.split()) & {
            HW_ID, OTHER_HW_ID, THIRD_HW_ID, "co2unit-dddddddddddd", "co2unit-eeeeeeeeeeee"})

    assert targets("--all") == sorted([HW_ID, OTHER_HW_ID])
    assert targets("--site", "site-1") == [HW_ID]
    assert targets("--tier", "2") == [OTHER_HW_ID]
    assert main(["publish-update", "--nickname", "x", "--site", "nowhere"]) == 2
    assert "no unit is currently deployed at site 'nowhere'" in capsys.readouterr().err


def test_an_error_midway_removes_the_temporary_directories(site, monkeypatch, capsys):
    real_write = update_publish._write_file
    written = []

    def failing_write(path: Path, content) -> None:
        if OTHER_HW_ID in str(path):
            raise OSError(28, "No space left on device")
        written.append(path)
        real_write(path, content)

    monkeypatch.setattr(update_publish, "_write_file", failing_write)
    assert main(["publish-update", "--unit", HW_ID, "--unit", OTHER_HW_ID,
                 "--nickname", "x"]) == 1
    assert "No space left" in capsys.readouterr().err
    assert written  # the first unit's tree was written, and then removed
    for hw_id in (HW_ID, OTHER_HW_ID):
        assert list(updates_of(site, hw_id).iterdir()) == []


def test_every_file_and_directory_is_fsynced_before_the_rename(site, monkeypatch):
    events: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src, dst) -> None:
        events.append(("rename", str(src)))
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    flash = site / "code"
    (flash / "lib").mkdir(parents=True)
    (flash / "lib" / "a.mpy").write_bytes(b"a")
    (flash / "main.py").write_bytes(b"b")
    plan = publish(site / "remote_data", [HW_ID], UpdateContent(nickname="n", flash={
        "lib/a.mpy": flash / "lib" / "a.mpy", "main.py": flash / "main.py"}), day=DAY)

    renames = [i for i, (kind, _) in enumerate(events) if kind == "rename"]
    assert len(renames) == 1
    temp = Path(events[renames[0]][1])
    assert temp.name.startswith(".tmp-") and temp.parent == updates_of(site, HW_ID)
    synced_before = {path for kind, path in events[:renames[0]] if kind == "fsync"}
    final = plan.target(HW_ID)
    expected = {str(temp)} | {str(temp / rel) for rel in tree(final)}
    assert expected - synced_before == set()
    # The new entries of updates/ (created here) and of the unit's directory are durable too.
    assert str(updates_of(site, HW_ID).parent) in synced_before
    assert ("fsync", str(updates_of(site, HW_ID))) in events[renames[0]:]


def test_a_unit_never_lists_a_half_written_update(tmp_path, uwsgi_server):
    remote_data = uwsgi_server.remote_data
    (remote_data / HW_ID).mkdir(parents=True)
    flash = tmp_path / "code"
    flash.mkdir()
    for i in range(40):
        (flash / f"m{i:02d}.py").write_bytes(os.urandom(2000))
    content = UpdateContent(nickname="n-1", flash=update_publish.flash_files(flash))
    expected = sorted(["conf-patch/ou-id.json", *(f"flash/m{i:02d}.py" for i in range(40))])
    stop = threading.Event()
    seen: list[str] = []
    partial: list[tuple[str, list]] = []

    def poll() -> None:
        while not stop.is_set():
            reply = uwsgi_server.request("GET", f"/ou/{HW_ID}/updates?recursive=False",
                                         timeout=10)
            for name in reply.json() if reply.status == 200 else []:
                files = uwsgi_server.request(
                    "GET", f"/ou/{HW_ID}/updates/{name}?recursive=True", timeout=10).json()
                seen.append(name)
                if files != expected:
                    partial.append((name, files))

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        published = []
        while len(published) < 12 and time.monotonic() < deadline:
            published.append(publish(remote_data, [HW_ID], content).name)
    finally:
        stop.set()
        reader.join(timeout=30)
    assert not reader.is_alive()
    assert len(published) == 12 and len(set(published)) == 12
    assert partial == []
    # The reader was looking while updates were being written, not only afterwards.
    assert len(set(seen)) >= 6, sorted(set(seen))
