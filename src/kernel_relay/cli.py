# -*- test-case-name: tests.e2e.test_console_script -*-
"""
The ``kernel-relay`` console script, the original's command line (``kernel-relay [port]``): ``twist
kernel-relay`` under another name, run by Twisted's own runner for ``twist`` with the relay's options and
help, logging as ``twist`` does. It knows how to start the process and nothing of the relay: the service,
its options and its shutdown come from the ``kernel-relay`` plugin.

A few things differ from ``twist``: the usage line names ``kernel-relay``; a mistake on the command line is
one line on stderr and exit status 2 (``twist`` prints its whole help and exits 64); the log is text unless
``--log-format json`` (see :mod:`kernel_relay.logs`), whatever stdout is, at ``--log-level``; and a stop by
``SIGINT`` or ``SIGTERM`` exits 0 (once every kernel is shut down) where ``twist`` ends by the same signal
again.
``twist`` has no public API: its runner (``Twist``, ``TwistOptions``, ``Runner``) comes through
:mod:`kernel_relay.twisted_internals`, and the tests of this script (``tests/e2e/test_console_script.py``)
fail if a Twisted release changes it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO

from twisted.logger import ILogObserver, LogLevel
from twisted.python.usage import UsageError

from .logs import observer
from .twisted_internals import Runner, Twist, TwistOptions

#: The ``twist`` plugin this script runs (``src/twisted/plugins/kernel_relay_plugin.py``).
PLUGIN = "kernel-relay"
#: The exit status of a mistake on the command line (as argparse's).
USAGE_ERROR = 2


class ConsoleOptions(TwistOptions):
    """``twist``'s options with the plugin given: the command line after ``kernel-relay`` is the relay's."""

    def getSynopsis(self) -> str:
        # A plugin's usage line is its parent's synopsis, the plugin's name, then the plugin's own synopsis:
        # "Usage: kernel-relay [options] [port]".
        return "Usage:"


class ConsoleScript(Twist):
    """``twist kernel-relay``, as the program ``kernel-relay``."""

    @staticmethod
    def options(argv: Sequence[str]) -> TwistOptions:
        options = ConsoleOptions()
        try:
            options.parseOptions([PLUGIN, *argv[1:]])
        except UsageError as error:
            # One line: the help is 150 lines, and the mistake would scroll out of sight above it.
            sys.stderr.write(
                f"kernel-relay: error: {error} (kernel-relay --help lists the options)\n"
            )
            sys.exit(USAGE_ERROR)
        relay = options.subOptions
        log_format, level = relay.get("log-format") or "text", relay.get("log-level") or "info"

        def log_observer(file: IO[str]) -> ILogObserver:
            return observer(file, log_format, level)

        options["fileLogObserverFactory"] = log_observer
        options["logLevel"] = LogLevel.levelWithName(level)
        return options

    @staticmethod
    def run(twistOptions: TwistOptions) -> None:
        # Twist.run without its last step, which kills the process with the signal that stopped the reactor:
        # a relay stopped by SIGINT or SIGTERM has shut its kernels down and ends with status 0.
        Runner(
            reactor=twistOptions["reactor"],
            defaultLogLevel=twistOptions["logLevel"],
            logFile=twistOptions["logFile"],
            fileLogObserverFactory=twistOptions["fileLogObserverFactory"],
        ).run()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the relay with the command line ``argv`` (``sys.argv`` by default, the program's name first)."""
    ConsoleScript.main(sys.argv if argv is None else argv)
