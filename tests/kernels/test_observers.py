"""The registry's list of observers: each is told in turn, and one that fails costs the others nothing."""

from __future__ import annotations

from typing import Any

from kernel_relay.kernels._observers import Observers
from tests.fakes import FakeKernel, RecordingObserver


class Failing(RecordingObserver):
    """An observer that breaks on every news."""

    def kernel_started(self, kernel: Any) -> None:
        raise RuntimeError("observer bug")


def observers_of(*observers: RecordingObserver) -> Observers:
    told = Observers()
    for observer in observers:
        told.add(observer)
    return told


def test_every_observer_hears_every_event_in_order() -> None:
    """Each event reaches every observer, in the order they were added, with its details."""
    first, second = RecordingObserver(), RecordingObserver()
    observers = observers_of(first, second)
    kernel = FakeKernel("k")
    observers.kernel_restarting(kernel)  # type: ignore[arg-type]
    observers.kernel_restarted(kernel)  # type: ignore[arg-type]
    observers.kernel_ready(kernel)  # type: ignore[arg-type]
    observers.kernel_stopped(kernel, "shutdown")  # type: ignore[arg-type]
    expected = [
        ("restarting", "k"),
        ("restarted", "k"),
        ("ready", "k"),
        ("stopped", "k", "shutdown"),
    ]
    assert first.events == second.events == expected


def test_a_failing_observer_does_not_stop_the_others() -> None:
    """An observer that raises is logged and skipped; the ones after it are still told."""
    broken, working = Failing(), RecordingObserver()
    observers = observers_of(broken, working)
    observers.kernel_started(FakeKernel("k"))  # type: ignore[arg-type]
    assert working.events == [("started", "k")]


def test_removed_observers_are_no_longer_told() -> None:
    """A removed observer hears nothing more; removing one never added is harmless."""
    observer = RecordingObserver()
    observers = observers_of(observer)
    observers.remove(observer)
    observers.remove(RecordingObserver())
    observers.kernel_started(FakeKernel("k"))  # type: ignore[arg-type]
    assert observer.events == []
