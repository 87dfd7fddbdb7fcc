"""The shared file lock: creates its directory, excludes others, says when it waits."""

from __future__ import annotations

import threading

from co2unit_server.core.locking import file_lock


def test_lock_creates_its_directory_and_excludes_another_holder(tmp_path):
    path = tmp_path / "locks" / "x.lock"
    waited, entered = [], threading.Event()

    def second_holder() -> None:
        with file_lock(path, on_wait=lambda: waited.append(True)):
            entered.set()

    with file_lock(path):
        thread = threading.Thread(target=second_holder)
        thread.start()
        assert not entered.wait(0.5), "a second holder got in while the lock was held"
    assert entered.wait(10)
    thread.join(timeout=10)
    assert waited == [True]
    with file_lock(path, on_wait=lambda: waited.append(False)):
        pass
    assert waited == [True]  # free: no wait announced
