"""controller/process.py's reading of a controller's log: which sync a wait
after a mark answers with."""
import threading

from controller.process import ControllerProcess


def _with_log(*lines):
    proc = ControllerProcess("unused.yaml")
    proc.lines = list(lines)
    proc._reader = threading.Thread()  # not started: a log that grows no more
    return proc


def _sync(bridge, add, delete, unchanged):
    return (f"INFO socketnet.pipeline: {bridge}: pipeline in sync ({add} to add, "
            f"{delete} to delete, {unchanged} unchanged)")


def test_a_wait_after_a_mark_answers_with_the_first_sync_since_not_a_later_one():
    proc = _with_log(_sync("mesh", 40, 0, 0), "a mark here",
                     _sync("mesh", 0, 1, 39), _sync("vmbr0", 2, 0, 20), _sync("mesh", 0, 0, 40))
    assert proc.wait_synced(["mesh", "vmbr0"], timeout=0.1, after=1) == {
        "mesh": {"add": 0, "delete": 1, "unchanged": 39},
        "vmbr0": {"add": 2, "delete": 0, "unchanged": 20}}
    assert proc.wait_synced(["mesh"], timeout=0.1)["mesh"]["add"] == 40
