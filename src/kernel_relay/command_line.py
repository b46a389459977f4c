# -*- test-case-name: tests.test_settings -*-
"""
Twisted's ``usage.Options`` with the relay's ways of being configured (see :mod:`.settings`): the TOML file
and the environment read into the command line with their precedence, a bare port anywhere on it, sizes and
durations with units, errors that name their option in one line, and a ``--help`` grouped by topic with
each option's variable. :class:`kernel_relay.tap.Options` says which options are which; this knows how.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.python import usage

from .settings import (
    ACTIONS,
    CONFIG_ENV,
    Documented,
    Setting,
    SettingsError,
    compose,
    environment_arguments,
    file_arguments,
    parse_duration,
    parse_size,
    read_file,
    render_config,
    render_help,
    split_command_line,
    toml_value,
)

_QUIET_DOCS = ("Must be positive.", "Must not be negative.")

#: What reStructuredText would read as markup in a help text (``*`` in ``https://*.example.com``, a
#: trailing ``_`` as a reference): escaped in ``docs/options.rst``, whose build treats warnings as errors.
_RST_MARKUP = re.compile(r"([\\*`|]|_(?![A-Za-z0-9]))")


def _rst_text(text: str) -> str:
    """A plain help text as reStructuredText that shows it as it is."""
    return _RST_MARKUP.sub(r"\\\1", text)


def _named(name: str, coerce: Callable[[str], Any]) -> Callable[[str], Any]:
    """``coerce``, its ValueError a one-line UsageError naming the option (not "Parameter type ...")."""

    def named(text: str) -> Any:
        try:
            return coerce(text)
        except ValueError as error:
            raise usage.UsageError(f"--{name} {text!r}: {error}") from None

    named.coerceDoc = getattr(coerce, "coerceDoc", "")  # type: ignore[attr-defined]
    return named


def _with_units(
    parse: Callable[[str], float | int], coerce: Callable[[str], Any]
) -> Callable[[str], Any]:
    def coerce_units(text: str) -> Any:
        return coerce(repr(parse(text)))

    return coerce_units


def _with_unit(size: int) -> int | str:
    """A byte size as people write it: ``16777216`` -> ``16MiB`` (when it is a whole number of one)."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return size


class SettingsOptions(usage.Options):
    """``usage.Options`` reading the file and the environment too (see the module's docstring)."""

    optParameters: Sequence[Sequence[Any]] = [
        [
            "config",
            "c",
            None,
            f"Read settings from this TOML file (keys are the options' long names: max-kernels = 4; "
            f"pool = {{python3 = 2}}); or set ${CONFIG_ENV}. The command line overrides the "
            "environment, which overrides the file.",
        ],
    ]
    optFlags: Sequence[Sequence[Any]] = [
        [
            "generate-config",
            None,
            "Print a commented TOML file of every setting (those given set, the others at their "
            "defaults) and exit: kernel-relay --generate-config > kernel-relay.toml",
        ],
    ]

    #: Option names by topic, for ``--help`` and ``--generate-config``; the others go under "Other".
    topics: Sequence[tuple[str, Sequence[str]]] = ()
    sizes: frozenset[str] = frozenset()
    durations: frozenset[str] = frozenset()
    secrets: frozenset[str] = frozenset()
    #: Options one of which, given by a stronger source, overrides all of them from a weaker one.
    together: Sequence[frozenset[str]] = ()
    #: What ``--help`` shows for an option's value, when its name does not say it.
    placeholders: Mapping[str, str] = {}
    #: The bare argument's option (``kernel-relay 3000``).
    positional = "port"
    #: Where ``$KERNEL_RELAY_*`` are read from (``os.environ`` unless a test says otherwise).
    environ: Mapping[str, str] | None = None

    def __init__(self) -> None:
        super().__init__()
        self.given: dict[str, object] = {}
        """The settings given by some source, as text (``--generate-config`` writes them)."""
        for name, dispatch in self._dispatch.items():
            if isinstance(dispatch, usage.CoerceParameter):
                coerce = dispatch.coerce
                if name in self.sizes:
                    coerce = _with_units(parse_size, coerce)
                elif name in self.durations:
                    coerce = _with_units(parse_duration, coerce)
                dispatch.coerce = _named(name, coerce)

    def settings(self, actions: bool = False) -> dict[str, Setting]:
        """Every option that is a setting (and with ``actions``, every other), by its long name."""
        shorts = {long: short for short, long in self.synonyms.items() if len(short) == 1}
        result = {}
        for option in self.longOpt:
            name = option.rstrip("=")
            if name in ACTIONS and not actions:
                continue
            kind = "flag" if not option.endswith("=") else "value"
            if isinstance(self.get(name), list | dict):
                kind = "list"
            result[name] = Setting(name, kind, shorts.get(name), name in self.secrets)
        return result

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        arguments = list(sys.argv[1:] if options is None else options)
        settings = self.settings()
        try:
            opts, rest = split_command_line(arguments, self.shortOpt, self.longOpt)
        except ValueError as error:
            raise usage.UsageError(str(error)) from None
        if len(rest) > 1:
            raise usage.UsageError(f"unexpected argument {rest[1]!r}")
        command_line: list[str] = []
        named: set[str] = set()
        config = None
        for option, value in opts:
            name = self._canonical(option)
            named.add(name)
            if name == "config":
                config = value
            takes_value = f"{name}=" in self.longOpt
            command_line += [option, value] if takes_value else [option]
        if rest:
            named.add(self.positional)
        environ = os.environ if self.environ is None else self.environ
        config = config or environ.get(CONFIG_ENV) or None
        try:
            from_file = file_arguments(settings, read_file(config), config) if config else {}
            from_environment = environment_arguments(settings, environ)
        except SettingsError as error:
            raise usage.UsageError(str(error)) from None
        composed = compose(command_line, named, from_environment, from_file, self.together)
        self.given = self._given(composed, settings, rest)
        if "generate-config" in named:
            self.postOptions = lambda: None  # type: ignore[method-assign]
            super().parseOptions([*composed, "--", *rest])
            sys.stdout.write(self.generated_config())
            sys.exit(0)
        super().parseOptions([*composed, "--", *rest])

    def _canonical(self, option: str) -> str:
        """``-p``, ``--port`` -> ``port``; ``--allow-origin`` -> ``allow-origin``."""
        stripped = option.lstrip("-")
        name = self.synonyms.get(stripped) or self.synonyms.get(
            stripped.replace("-", "_"), stripped
        )
        return str(name).replace("_", "-")

    def _given(
        self, composed: Sequence[str], settings: Mapping[str, Setting], rest: Sequence[str]
    ) -> dict[str, object]:
        opts, _ = split_command_line(composed, self.shortOpt, self.longOpt)
        given: dict[str, object] = {}
        for option, value in opts:
            setting = settings.get(self._canonical(option))
            if setting is None:
                continue
            name = setting.name
            if setting.kind == "flag":
                given[name] = True
            elif setting.kind == "list":
                cast_list = given.setdefault(name, [])
                assert isinstance(cast_list, list)
                cast_list.append(value)
            else:
                given[name] = value
        if rest:
            given[self.positional] = rest[0]
        return given

    def documented(self) -> list[tuple[str, list[Documented]]]:
        """The settings by topic, with their help and defaults."""
        settings = self.settings(actions=True)
        placed: set[str] = set()
        result: list[tuple[str, list[Documented]]] = []
        general = ("General", ["config", "generate-config", "help", "version", "generate-token"])
        for topic, names in [general, *self.topics, ("Other", list(settings))]:
            items = [self._document(settings[name]) for name in names if name in settings]
            items = [item for item in items if item.setting.name not in placed]
            placed.update(item.setting.name for item in items)
            if items:
                result.append((topic, items))
        return result

    def _document(self, setting: Setting) -> Documented:
        doc = " ".join((self.docs.get(setting.name) or "").split())
        dispatch = self._dispatch.get(setting.name)
        extra = getattr(getattr(dispatch, "coerce", None), "coerceDoc", "")
        if extra and extra not in _QUIET_DOCS and extra not in doc:
            doc = f"{doc} {extra}"
        default = self.defaults.get(setting.name)
        if setting.name in self.sizes and isinstance(default, int) and default:
            default = _with_unit(default)
        return Documented(setting, doc, default, self._placeholder(setting.name))

    def _placeholder(self, name: str) -> str:
        if name in self.sizes:
            return "SIZE"
        if name in self.durations:
            return "DURATION"
        if name in self.placeholders:
            return self.placeholders[name]
        if name.endswith(("-file", "-log")) or name == "config":
            return "FILE"
        return "N" if name.startswith("max-") else name.rsplit("-", 1)[-1].upper()

    def __str__(self) -> str:
        return self.getUsage()

    def getUsage(self, width: int | None = None) -> str:
        return render_help(
            self.getSynopsis(),
            " ".join(getattr(self, "longdesc", "").split())
            + " Sizes take units (32MiB, 1GB), durations too (90s, 5m, 250ms). Every option can be set "
            "in the environment, as the variable shown beside it, or in a TOML file (--config).",
            self.documented(),
        )

    def reference(self) -> str:
        """``docs/options.rst``: every option by topic, with its variable, file key and default."""
        lines = [
            "Options",
            "=======",
            "",
            ".. Generated from kernel_relay.tap.Options: do not edit. To regenerate:",
            "   python -c 'from kernel_relay.tap import Options; print(Options().reference(), end=\"\")'"
            " > docs/options.rst",
            "",
            "Every option of ``kernel-relay`` (and ``twist kernel-relay``). Each can also be set in the "
            "environment, as its variable, or in a TOML file (``--config FILE`` or ``$KERNEL_RELAY_CONFIG``), "
            "as its file key. The command line overrides the environment, which overrides the file, which "
            "overrides the defaults. Sizes take units (``32MiB``, ``1GB``), durations too (``90s``, ``5m``).",
        ]
        for topic, items in self.documented():
            lines += ["", topic, "-" * len(topic), ""]
            for item in items:
                setting = item.setting
                value = "" if setting.kind == "flag" else f" {item.placeholder}"
                lines += [f"``--{setting.name}{value}``", f"    {_rst_text(item.doc)}", ""]
                if setting.name in ACTIONS:
                    lines.append("    Command line only.")
                else:
                    where = f"Variable ``{setting.variable}``; file key ``{setting.name}``"
                    if setting.kind == "list":
                        where += " (a list; the variable separates values with commas)"
                    elif setting.kind == "flag":
                        where += " (true or false)"
                    if item.default not in (None, "", [], {}, ()):
                        where += f"; default ``{toml_value(item.default)}``"
                    lines.append(f"    {where}.")
                lines.append("")
        return "\n".join(lines).rstrip("\n") + "\n"

    def generated_config(self) -> str:
        """``--generate-config``'s file."""
        return render_config(
            [
                (topic, [item for item in items if item.setting.name not in ACTIONS])
                for topic, items in self.documented()
                if topic != "General"
            ],
            self.given,
            [
                "kernel-relay settings (TOML). Use: kernel-relay --config THIS_FILE, or set "
                f"${CONFIG_ENV}.",
                "Keys are the long options' names. The command line overrides the environment "
                "(KERNEL_RELAY_<OPTION>), which overrides this file, which overrides the defaults.",
                "Sizes take units (32MiB, 1GB) and durations too (90s, 5m).",
            ],
        )


__all__ = ["ACTIONS", "SettingsOptions"]
