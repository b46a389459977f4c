"""
``python -m bench.profile_relay OUT.prof [twist kernel-relay options]``: the relay under cProfile.

``twist`` ends a signalled run by re-raising the signal, which would lose the profile; here the
profile is written first. It counts the reactor thread's CPU time, not wall time: on a loaded machine, wall
time also counts the turns the relay waited to be scheduled (a send that wakes another process looks slow).
"""

from __future__ import annotations

import cProfile
import os
import sys
import time

from twisted.application.twist import _twist


def main() -> None:
    out = sys.argv[1]
    profiler = cProfile.Profile(time.thread_time)

    def exit_with_signal(signum: int) -> None:
        profiler.disable()
        profiler.dump_stats(out)
        sys.stdout.flush()
        os._exit(0)

    _twist._exitWithSignal = exit_with_signal  # type: ignore[attr-defined]
    profiler.enable()
    try:
        _twist.Twist.main(["twist", "kernel-relay", *sys.argv[2:]])
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    main()
