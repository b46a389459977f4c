"""The death watch in process: polling on a Clock, kernel processes faked."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock

from kernel_relay.kernels._deathwatch import DeathWatch, death_reason
from tests.fakes import FakeManager, FakeProcesses


class Watched:
    """What the watch is given to poll, whether it may rest, and the deaths it reports."""

    def __init__(self, *kernel_ids: str) -> None:
        self.kernel_ids = list(kernel_ids)
        self.busy = True
        self.dead: list[tuple[str, str]] = []

    def watched(self) -> list[tuple[str, Any]]:
        return [(kernel_id, FakeManager(kernel_id)) for kernel_id in self.kernel_ids]

    def on_dead(self, kernel_id: str, reason: str) -> None:
        self.dead.append((kernel_id, reason))


def watch_of(
    *kernel_ids: str, processes: Any = None
) -> tuple[DeathWatch, Clock, FakeProcesses, Watched]:
    clock, seen = Clock(), Watched(*kernel_ids)
    processes = processes or FakeProcesses()
    watch = DeathWatch(
        clock,
        processes,
        interval=1.0,
        watched=seen.watched,
        busy=lambda: seen.busy,
        on_dead=seen.on_dead,
    )
    return watch, clock, processes, seen


def test_death_reasons_say_how_the_process_ended() -> None:
    """An exit code, a signal and an unknown end each read as observers are told them."""
    assert death_reason(7) == "died: exit code 7"
    assert death_reason(0) == "died: exit code 0"
    assert death_reason(-9) == "died: killed by signal 9"
    assert death_reason(None) == "died: the kernel process is gone"


def test_every_watched_kernel_is_asked_about_once_per_interval() -> None:
    """Once started, the watch asks about all watched kernels together, each interval, not before."""
    watch, clock, processes, _ = watch_of("a", "b")
    clock.advance(5)
    assert processes.polled == []
    watch.start()
    watch.start()
    clock.advance(0.9)
    assert processes.polled == []
    clock.advance(0.1)
    assert processes.polled == [["a", "b"]]
    clock.pump([1.0] * 3)
    assert len(processes.polled) == 4


def test_dead_kernels_are_reported_with_their_reason() -> None:
    """Each kernel found dead is reported once per poll with how it ended; the living are not."""
    watch, clock, processes, seen = watch_of("alive", "crashed", "killed")
    processes.exited.update(crashed=1, killed=-15)
    watch.start()
    clock.advance(1)
    assert seen.dead == [("crashed", "died: exit code 1"), ("killed", "died: killed by signal 15")]


def test_nothing_watched_means_no_thread_hop() -> None:
    """A tick with nothing to ask about does not call into the kernel processes."""
    watch, clock, processes, _ = watch_of()
    watch.start()
    clock.pump([1.0] * 3)
    assert processes.polled == [] and watch.running


def test_the_watch_rests_only_when_nothing_is_left() -> None:
    """settle stops the polling only once there is nothing to watch; start resumes it."""
    watch, clock, processes, seen = watch_of("a")
    watch.start()
    watch.settle()
    assert watch.running
    seen.busy = False
    watch.settle()
    assert not watch.running and clock.getDelayedCalls() == []
    watch.start()
    clock.advance(1)
    assert watch.running and processes.polled == [["a"]]


class BrokenProcesses(FakeProcesses):
    """Kernel processes whose poll fails."""

    def find_dead(self, watched: Any) -> Deferred[list[tuple[str, int | None]]]:
        self.polled.append([kernel_id for kernel_id, _ in watched])
        return fail(RuntimeError("poll failed"))


def test_a_failed_poll_is_logged_and_polling_goes_on() -> None:
    """A poll that fails does not stop the watch: the next tick asks again."""
    watch, clock, processes, seen = watch_of("a", processes=BrokenProcesses())
    watch.start()
    clock.pump([1.0] * 2)
    assert len(processes.polled) == 2 and watch.running and seen.dead == []
