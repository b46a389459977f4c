# -*- test-case-name: tests.e2e.test_console_script -*-
"""
The ``kernel-relay`` console script, the original's command line (``kernel-relay [port]``): ``twist
kernel-relay`` under another name, run by Twisted's own runner for ``twist`` with the relay's options and
help, logging as ``twist`` does. It knows how to start the process and nothing of the relay: the service,
its options and its shutdown come from the ``kernel-relay`` plugin.

Two things differ from ``twist``: the usage line names ``kernel-relay``, and a stop by ``SIGINT`` or
``SIGTERM`` exits 0 (once every kernel is shut down) where ``twist`` ends by the same signal again.
``twist`` has no public API: its runner (``Twist``, ``TwistOptions``, ``Runner``) comes through
:mod:`kernel_relay.twisted_internals`, and the tests of this script (``tests/e2e/test_console_script.py``)
fail if a Twisted release changes it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from twisted.python.usage import UsageError

from .twisted_internals import Runner, Twist, TwistOptions

#: The ``twist`` plugin this script runs (``src/twisted/plugins/kernel_relay_plugin.py``).
PLUGIN = "kernel-relay"


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
            # The relay's usage, not twist's (whose options this command line cannot reach).
            usage = getattr(options, "subOptions", None) or options
            sys.stderr.write(f"Error: {error}\n\n{usage}\n")
            sys.exit(os.EX_USAGE)
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
