# -*- test-case-name: tests.test_settings -*-
"""
The relay's settings from every source, as one command line: a TOML file (``--config FILE`` or
``$KERNEL_RELAY_CONFIG``), the environment (``KERNEL_RELAY_<OPTION>``, the option's name in capitals with
``_`` for ``-``) and the command line itself. Precedence: command line > environment > file > defaults; a
repeatable option (``--listen``, ``--pool``...) takes all its values from the one source that sets it first
in that order. Byte sizes and durations take units (:func:`parse_size`, :func:`parse_duration`).

It knows options only as names and text: what a value means is :mod:`kernel_relay.tap`'s. No I/O but
reading the file it is given.
"""

from __future__ import annotations

import getopt
import re
import textwrap
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "KERNEL_RELAY_"
#: The variable naming the configuration file when ``--config`` does not.
CONFIG_ENV = "KERNEL_RELAY_CONFIG"

#: Options that act rather than set something: not read from the environment or a file.
ACTIONS = frozenset({"help", "version", "generate-token", "config", "generate-config"})

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_SIZE = re.compile(rf"^{_NUMBER}\s*([a-z]*)$")
_DURATION_PART = re.compile(rf"{_NUMBER}\s*(ms|min|s|m|h|d)\s*")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+")


def parse_size(text: str) -> int:
    """A byte count: ``1048576``, ``32MiB``, ``32M`` (binary), ``32MB`` (decimal), ``1.5GiB``."""
    match = _SIZE.match(text.strip().lower())
    if match is None or match.group(2) not in _SIZE_UNITS:
        raise ValueError(
            f"{text!r} is not a size (bytes, or a number with B, KiB, MiB, GiB, KB, MB, GB)"
        )
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def parse_duration(text: str) -> float:
    """Seconds: ``90``, ``90s``, ``1.5m``, ``250ms``, ``1h30m``, ``2d``."""
    value = text.strip().lower()
    if re.fullmatch(_NUMBER, value):
        return float(value)
    if value and _DURATION.fullmatch(value):
        return sum(
            float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(value)
        )
    raise ValueError(
        f"{text!r} is not a duration (seconds, or a number with ms, s, m, h, d: 90s, 5m)"
    )


@dataclass(frozen=True)
class Setting:
    """One option as the sources see it."""

    name: str
    kind: str
    """``flag`` (on or off), ``value`` (one value) or ``list`` (repeatable)."""
    short: str | None = None
    secret: bool = False

    @property
    def variable(self) -> str:
        return ENV_PREFIX + self.name.upper().replace("-", "_")


class SettingsError(ValueError):
    """A value from the environment or the file that cannot be an option's, or a file that cannot be read."""


def env_name(option: str) -> str:
    """``max-kernels`` -> ``KERNEL_RELAY_MAX_KERNELS``."""
    return ENV_PREFIX + option.upper().replace("-", "_")


def split_command_line(
    argv: Sequence[str], short: str, long: Sequence[str]
) -> tuple[list[tuple[str, str]], list[str]]:
    """
    The options of ``argv`` (``(--name or -x, value)``, long names completed) and its other arguments,
    wherever they stand: ``4152 --token abc`` is ``--token abc`` and ``4152``. getopt's errors as ValueError.
    """
    try:
        return getopt.gnu_getopt(list(argv), short, list(long))
    except getopt.GetoptError as error:
        raise ValueError(str(error)) from None


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def _from_environment(setting: Setting, text: str) -> list[str]:
    if setting.kind == "flag":
        if text.strip().lower() in _TRUE:
            return [f"--{setting.name}"]
        if text.strip().lower() in _FALSE:
            return []
        raise SettingsError(
            f"${setting.variable}={text!r}: a flag is 1/true/yes/on or 0/false/no/off"
        )
    if setting.kind == "list":
        return [f"--{setting.name}={item.strip()}" for item in text.split(",") if item.strip()]
    return [f"--{setting.name}={text}"]


def _scalar(setting: Setting, where: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise SettingsError(f"{where}: {setting.name} takes a string or a number, not {value!r}")
    return str(value)


def _from_file(setting: Setting, where: str, value: object) -> list[str]:
    if setting.kind == "flag":
        if not isinstance(value, bool):
            raise SettingsError(f"{where}: {setting.name} is true or false, not {value!r}")
        return [f"--{setting.name}"] if value else []
    if setting.kind == "list":
        if isinstance(value, dict):  # pool = {python3 = 2}
            items = [f"{key}={_scalar(setting, where, item)}" for key, item in value.items()]
        elif isinstance(value, list):
            items = [_scalar(setting, where, item) for item in value]
        else:
            items = [_scalar(setting, where, value)]
        return [f"--{setting.name}={item}" for item in items]
    return [f"--{setting.name}={_scalar(setting, where, value)}"]


def read_file(path: str) -> dict[str, Any]:
    """The TOML file's table; SettingsError (one line) when it cannot be read or parsed."""
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except OSError as error:
        raise SettingsError(f"--config {path}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"--config {path}: not TOML: {error}") from None


def file_arguments(
    settings: Mapping[str, Setting], table: Mapping[str, Any], path: str
) -> dict[str, list[str]]:
    """Each setting the file's ``table`` sets, as command-line arguments; keys use ``-`` or ``_``."""
    result: dict[str, list[str]] = {}
    # A [kernel-relay] table is the same as the top level (for a file shared with other programs).
    for key, value in {**table, **table.get("kernel-relay", {})}.items():
        if key == "kernel-relay":
            continue
        name = key.replace("_", "-")
        setting = settings.get(name)
        if setting is None:
            raise SettingsError(f"{path}: unknown setting {key!r} (kernel-relay --help lists them)")
        result[name] = _from_file(setting, path, value)
    return result


def environment_arguments(
    settings: Mapping[str, Setting], environ: Mapping[str, str]
) -> dict[str, list[str]]:
    """Each setting the environment sets (a variable set to the empty string does not)."""
    result: dict[str, list[str]] = {}
    for name, setting in settings.items():
        text = environ.get(setting.variable)
        if text is None or (text == "" and setting.kind != "flag"):
            continue
        arguments = _from_environment(setting, text)
        if arguments:
            result[name] = arguments
    return result


def compose(
    command_line: Sequence[str],
    set_on_command_line: Iterable[str],
    environment: Mapping[str, list[str]],
    file: Mapping[str, list[str]],
    together: Sequence[frozenset[str]] = (),
) -> list[str]:
    """
    One command line: the file's settings, then the environment's, then the command line's, each source
    leaving out what a stronger one sets (and, for the names in one of ``together``, what a stronger one
    sets of that group: ``--fleet-secret-file`` on the command line overrides ``$KERNEL_RELAY_FLEET_SECRET``).
    """

    def covered(names: Iterable[str]) -> set[str]:
        result = set(names)
        for group in together:
            if result & group:
                result |= group
        return result

    strong = covered(set_on_command_line)
    from_environment = {name: args for name, args in environment.items() if name not in strong}
    stronger = covered(strong | set(from_environment))
    arguments = [arg for name, args in file.items() if name not in stronger for arg in args]
    arguments += [arg for args in from_environment.values() for arg in args]
    return arguments + list(command_line)


def toml_value(value: object) -> str:
    """A TOML literal for a default or a given value (a string that reads as a number stays a number)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + "}"
    text = str(value)
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Documented:
    """A setting with what the help and a generated file say of it."""

    setting: Setting
    doc: str
    default: object
    placeholder: str = "VALUE"


Topics = Sequence[tuple[str, Sequence[Documented]]]


def render_help(synopsis: str, description: str, topics: Topics, width: int = 100) -> str:
    """``--help``: the options by topic, each with its variable; long lines wrapped at ``width``."""
    lines = [synopsis, *textwrap.wrap(description, width)]
    for topic, documented in topics:
        lines += ["", f"{topic}:"]
        for item in documented:
            setting = item.setting
            names = f"-{setting.short}, --{setting.name}" if setting.short else f"--{setting.name}"
            value = "" if setting.kind == "flag" else f" {item.placeholder}"
            variable = "" if setting.name in ACTIONS else f"  (${setting.variable})"
            lines.append(f"  {names}{value}{variable}")
            text = item.doc
            if setting.kind != "flag" and item.default not in (None, "", [], {}, ()):
                text += f" [default: {_plain(item.default)}]"
            lines += textwrap.wrap(text, width, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines) + "\n"


def _plain(value: object) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def render_config(topics: Topics, given: Mapping[str, object], header: Sequence[str]) -> str:
    """
    A commented TOML file: every setting with its help, the ``given`` ones (from the command line, the
    environment or a file) set, the others commented out at their defaults. Secrets are never written.
    """
    lines = [f"# {line}" if line else "#" for line in header]
    for topic, documented in topics:
        lines += ["", f"# --- {topic} ---"]
        for item in documented:
            setting = item.setting
            lines.append("")
            lines += textwrap.wrap(
                f"{item.doc} (${setting.variable}, --{setting.name})",
                98,
                initial_indent="# ",
                subsequent_indent="# ",
            )
            if setting.secret:
                lines.append(
                    f"# {setting.name} = ...  (not written: keep secrets out of files others read)"
                )
            elif setting.name in given:
                lines.append(f"{setting.name} = {toml_value(given[setting.name])}")
            elif item.default is None:
                lines.append(f"# {setting.name} =")
            else:
                lines.append(f"# {setting.name} = {toml_value(item.default)}")
    return "\n".join(lines) + "\n"


__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "Documented",
    "Setting",
    "SettingsError",
    "Topics",
    "compose",
    "env_name",
    "environment_arguments",
    "file_arguments",
    "parse_duration",
    "parse_size",
    "read_file",
    "render_config",
    "render_help",
    "split_command_line",
    "toml_value",
]
