"""Settings from the command line, the environment and a TOML file: one model, one precedence, units."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.python import usage

from kernel_relay.settings import env_name, parse_duration, parse_size, toml_value
from kernel_relay.tap import Options

REDIS = "redis://127.0.0.1:6390/0"

#: Two values of each setting (a flag: none), and what else it needs on the command line to be valid.
SAMPLES: dict[str, tuple[list[str], list[str]]] = {
    "port": (["4001", "4002"], []),
    "listen": (["tcp:4001:interface=127.0.0.1", "tcp:4002:interface=127.0.0.1"], []),
    "access-log": (["/tmp/a.log", "/tmp/b.log"], []),
    "no-demo": ([], []),
    "token": (["token-a", "token-b"], []),
    "no-auth": ([], []),
    "allow-origin": (["https://a.example", "https://b.example"], []),
    "allow-host": (["a.example", "b.example"], []),
    "trusted-proxy": (["10.0.0.1", "10.0.0.2"], []),
    "forwarded-header": (["forwarded", "x-forwarded-for"], []),
    "pool": (["python3=1", "python3=2"], []),
    "max-kernels": (["1", "2"], []),
    "launch-timeout": (["10", "20"], []),
    "shutdown-timeout": (["1", "2"], []),
    "kernel-env-allow": (["A", "B"], []),
    "kernel-encryption": (["auto", "disabled"], []),
    "kernel-transport": (["ipc", "tcp"], []),
    "heartbeat-interval": (["1", "2"], []),
    "heartbeat-timeout": (["40", "50"], []),
    "cull-idle-timeout": (["100", "200"], []),
    "cull-interval": (["10", "20"], []),
    "cull-connected": ([], []),
    "kernel-sandbox": (["off", "required"], []),
    "kernel-network": (["host", "none"], []),
    "kernel-limits": (["memory=1G", "memory=2G"], []),
    "transports": (["polling", "websocket"], []),
    "ping-interval": (["10", "12"], []),
    "ping-timeout": (["5", "6"], []),
    "connect-timeout": (["30", "31"], []),
    "no-eio3": ([], []),
    "max-payload": (["1000", "2000"], []),
    "max-message-size": (["1000", "2000"], []),
    "max-clients-per-kernel": (["1", "2"], []),
    "max-buffered-bytes": (["1000", "2000"], []),
    "max-total-buffered-bytes": (["1000", "2000"], []),
    "max-connections": (["100", "200"], []),
    "max-connections-per-address": (["10", "20"], []),
    "max-sessions": (["100", "200"], []),
    "max-sessions-per-address": (["10", "20"], []),
    "header-timeout": (["1", "2"], []),
    "body-timeout": (["1", "2"], []),
    "iopub-replay-bytes": (["0", "1000"], []),
    "iopub-replay-age": (["1", "2"], []),
    "requests-kept": (["1", "2"], []),
    "requests-outputs-bytes": (["0", "1000"], []),
    "requests-age": (["1", "2"], []),
    "max-rest-requests-per-kernel": (["1", "2"], []),
    "log-format": (["json", "text"], []),
    "log-level": (["debug", "warn"], []),
    "redis": ([REDIS, "redis://127.0.0.1:6390/1"], ["--fleet-secret", "s"]),
    "redis-password-file": (["FILE:pw-a", "FILE:pw-b"], ["--redis", REDIS, "--fleet-secret", "s"]),
    "fleet-secret": (["secret-a", "secret-b"], []),
    "fleet-secret-file": (["FILE:secret-a", "FILE:secret-b"], []),
    "fleet-lease": (["1", "2"], []),
    "base-url": (["/kernels/", "/relay/"], []),
    "default-kernel": (["python3", "second"], []),
    "allow-kernelspec": (["python3", "second"], []),
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting from the developer's environment; a second kernelspec, ``second``, installed."""
    spec = tmp_path / "jupyter" / "kernels" / "second"
    spec.mkdir(parents=True)
    spec.joinpath("kernel.json").write_text(
        '{"argv": ["true"], "display_name": "2", "language": "x"}'
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    for name in Options().settings():
        monkeypatch.delenv(env_name(name), raising=False)
    monkeypatch.delenv("KERNEL_RELAY_CONFIG", raising=False)
    monkeypatch.delenv("KERNEL_RELAY_REDIS_PASSWORD", raising=False)


def parsed(*argv: str, environ: dict[str, str] | None = None) -> Options:
    options = Options()
    options.environ = environ or {}
    options.parseOptions(list(argv))
    return options


def _value(sample: str, tmp_path: Path) -> str:
    """A sample, ``FILE:text`` made a file holding that text."""
    if not sample.startswith("FILE:"):
        return sample
    path = tmp_path / sample[5:]
    path.write_text(sample[5:] + "\n")
    return str(path)


def _file(tmp_path: Path, name: str, value: str | None, kind: str) -> str:
    path = tmp_path / "relay.toml"
    if value is None:
        path.write_text(f"{name} = true\n")
    elif kind == "list":
        path.write_text(f"{name} = [{toml_value(value)}]\n")
    else:
        path.write_text(f"{name} = {toml_value(value)}\n")
    return str(path)


def test_every_setting_has_samples() -> None:
    """This test file covers every setting of ``Options`` (a new option needs samples here)."""
    assert set(Options().settings()) == set(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_setting_from_the_environment_and_the_file_with_the_precedence(
    name: str, tmp_path: Path
) -> None:
    """Each option set in $KERNEL_RELAY_<OPTION> or the TOML file is as on the command line; cli > env > file."""
    setting = Options().settings()[name]
    samples, companions = SAMPLES[name]
    variable = env_name(name)
    if setting.kind == "flag":
        assert parsed(*companions)[name] == 0
        assert parsed(*companions, environ={variable: "1"})[name] == 1
        assert parsed(*companions, environ={variable: "false"})[name] == 0
        assert parsed(*companions, "--config", _file(tmp_path, name, None, "flag"))[name] == 1
        return
    first, second = (_value(sample, tmp_path) for sample in samples)

    def cli(value: str) -> Any:
        return parsed(*companions, f"--{name}", value)[name]

    assert cli(first) != cli(second)
    assert parsed(*companions, environ={variable: first})[name] == cli(first)
    config = _file(tmp_path, name, first, setting.kind)
    assert parsed(*companions, "--config", config)[name] == cli(first)
    assert parsed(*companions, environ={"KERNEL_RELAY_CONFIG": config})[name] == cli(first)
    # The environment over the file, the command line over both.
    assert parsed(*companions, "--config", config, environ={variable: second})[name] == cli(second)
    assert parsed(*companions, "--config", config, f"--{name}", first, environ={variable: second})[
        name
    ] == cli(first)


def test_a_repeatable_option_takes_its_values_from_one_source(tmp_path: Path) -> None:
    """--listen on the command line replaces the environment's list, which replaces the file's."""
    config = tmp_path / "relay.toml"
    config.write_text('listen = ["tcp:1:interface=127.0.0.1", "tcp:2:interface=127.0.0.1"]\n')
    env = {"KERNEL_RELAY_LISTEN": "tcp:3:interface=127.0.0.1,tcp:4:interface=127.0.0.1"}
    assert parsed("--config", str(config))["listen"] == [
        "tcp:1:interface=127.0.0.1",
        "tcp:2:interface=127.0.0.1",
    ]
    assert parsed("--config", str(config), environ=env)["listen"] == [
        "tcp:3:interface=127.0.0.1",
        "tcp:4:interface=127.0.0.1",
    ]
    assert parsed("--config", str(config), "--listen", "tcp:5:interface=127.0.0.1", environ=env)[
        "listen"
    ] == ["tcp:5:interface=127.0.0.1"]


def test_the_file_takes_tables_underscores_and_a_kernel_relay_section(tmp_path: Path) -> None:
    """pool = {python3 = 2}, max_kernels and a [kernel-relay] table all read as the options."""
    config = tmp_path / "relay.toml"
    config.write_text("max_kernels = 3\nno-demo = true\n[kernel-relay]\npool = {python3 = 2}\n")
    options = parsed("--config", str(config))
    assert (options["max-kernels"], options["no-demo"], options["pool"]) == (3, 1, {"python3": 2})


def test_a_fleet_secret_file_on_the_command_line_overrides_the_secret_in_the_environment(
    tmp_path: Path,
) -> None:
    """--fleet-secret-file and $KERNEL_RELAY_FLEET_SECRET are one setting: the stronger source wins."""
    secret = tmp_path / "secret"
    secret.write_text("from-the-file\n")
    options = parsed(
        "--redis",
        REDIS,
        "--fleet-secret-file",
        str(secret),
        environ={"KERNEL_RELAY_FLEET_SECRET": "from-the-env"},
    )
    assert options["fleet-secret"] == "from-the-file"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("no-such-setting = 1\n", "unknown setting 'no-such-setting'"),
        ("max-kernels = [\n", "not TOML"),
        ("no-demo = 1\n", "no-demo is true or false"),
        ("max-kernels = 0\n", "--max-kernels '0': must be positive"),
    ],
)
def test_a_bad_file_is_one_clear_error(tmp_path: Path, content: str, message: str) -> None:
    """A file with an unknown key, bad TOML or a bad value is refused with a line naming what is wrong."""
    config = tmp_path / "relay.toml"
    config.write_text(content)
    with pytest.raises(usage.UsageError, match=message.replace("[", r"\[")):
        parsed("--config", str(config))


def test_a_missing_file_and_a_bad_variable_are_refused(tmp_path: Path) -> None:
    """--config naming no file, and a flag variable that is not a boolean, are usage errors."""
    with pytest.raises(usage.UsageError, match=r"--config .*missing"):
        parsed("--config", str(tmp_path / "missing.toml"))
    with pytest.raises(usage.UsageError, match="KERNEL_RELAY_NO_DEMO"):
        parsed(environ={"KERNEL_RELAY_NO_DEMO": "maybe"})


@pytest.mark.parametrize(
    ("argv", "port", "token"),
    [
        (["4152", "--token", "abc"], 4152, "abc"),
        (["--token", "abc", "4152"], 4152, "abc"),
        (["--max-kernels", "2", "4152", "--token", "abc"], 4152, "abc"),
    ],
)
def test_a_bare_port_anywhere_on_the_line(argv: list[str], port: int, token: str) -> None:
    """The positional port may stand before, between or after the options."""
    options = parsed(*argv)
    assert (options["port"], options["token"]) == (port, token)


def test_a_bare_port_and_another_port_contradict() -> None:
    """A bare port with --port, or with $KERNEL_RELAY_PORT, is the bare one (the command line wins) or an error."""
    with pytest.raises(usage.UsageError, match="either as --port or as an argument"):
        parsed("4152", "--port", "4153")
    assert parsed("4152", environ={"KERNEL_RELAY_PORT": "4153"})["port"] == 4152
    with pytest.raises(usage.UsageError, match="unexpected argument '9'"):
        parsed("4152", "9")


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1048576", 1048576),
        ("32MiB", 32 * 2**20),
        ("32M", 32 * 2**20),
        ("32MB", 32_000_000),
        ("1.5GiB", 3 * 2**29),
        ("64 kb", 64_000),
        ("512B", 512),
    ],
)
def test_sizes_take_units(text: str, size: int) -> None:
    """Byte sizes read plain numbers and binary or decimal units."""
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("1.5m", 90.0),
        ("250ms", 0.25),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
    ],
)
def test_durations_take_units(text: str, seconds: float) -> None:
    """Durations read plain seconds and ms, s, m, h, d, also combined."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "MiB", "12 parsecs", "-1M", "1e9"])
def test_a_size_without_a_number_or_with_an_unknown_unit_is_refused(text: str) -> None:
    """What is not a size is a ValueError naming the forms that are."""
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


@pytest.mark.parametrize("text", ["", "s", "5 weeks", "1h30", "m5", "nan"])
def test_a_duration_that_is_not_one_is_refused(text: str) -> None:
    """What is not a duration is a ValueError naming the units."""
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_units_on_the_options() -> None:
    """--max-payload 32MiB and --ping-interval 90s, --iopub-replay-age 10m are what they say."""
    options = parsed(
        "--max-payload", "32MiB", "--ping-interval", "90s", "--iopub-replay-age", "10m"
    )
    assert (options["max-payload"], options["ping-interval"], options["iopub-replay-age"]) == (
        32 * 2**20,
        90.0,
        600.0,
    )


def test_an_option_error_names_the_option_in_one_line() -> None:
    """A bad value is "--option 'value': why", not Twisted's "Parameter type enforcement failed"."""
    with pytest.raises(usage.UsageError) as caught:
        parsed("--max-kernels", "many")
    assert str(caught.value) == "--max-kernels 'many': not a whole number"


def test_the_generated_file_reads_back_as_the_same_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--generate-config writes the given settings and commented defaults; read back, it is the same relay."""
    with pytest.raises(SystemExit) as exited:
        parsed(
            "4152",
            "--max-payload",
            "32MiB",
            "--pool",
            "python3=2",
            "--token",
            "t",
            "--generate-config",
        )
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "# KERNEL_RELAY_" not in text  # variables are named with $
    assert "$KERNEL_RELAY_MAX_KERNELS" in text
    assert "token-" not in text and '\ntoken = "t"' not in text  # a secret is never written
    config = tmp_path / "relay.toml"
    config.write_text(text)
    options = parsed("--config", str(config))
    assert (options["port"], options["max-payload"], options["pool"]) == (
        4152,
        32 * 2**20,
        {"python3": 2},
    )
    assert options["ping-interval"] == 25.0  # a default, commented out


def test_help_is_grouped_and_names_each_variable() -> None:
    """--help has topics, and each setting's line names its KERNEL_RELAY_ variable."""
    text = str(Options())
    for topic in ("General:", "Listening:", "Access:", "Kernels:", "Logging:"):
        assert f"\n{topic}\n" in text
    for name in Options().settings():
        assert f"--{name}" in text and f"${env_name(name)}" in text
    assert "Parameter type" not in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--allow-kernelspec", "pyhton3"], "--allow-kernelspec pyhton3: no kernelspec named"),
        (["--default-kernel", "nope"], "--default-kernel nope: no kernelspec named 'nope'"),
        (
            ["--allow-kernelspec", "second", "--pool", "python3=1"],
            "--pool python3=1: 'python3' is not in --allow-kernelspec",
        ),
        (["--base-url", "http://host/kernels/"], "--base-url 'http://host/kernels/': it is a path"),
        (["--base-url", "/a/../b/"], "must not contain . or .."),
    ],
)
def test_kernelspecs_and_the_base_url_are_checked_at_start(argv: list[str], message: str) -> None:
    """A kernelspec named in the settings that is not installed or not allowed, a bad base URL: refused."""
    with pytest.raises(usage.UsageError) as caught:
        parsed(*argv)
    assert message in str(caught.value)


def test_the_base_url_is_a_path_with_slashes_at_both_ends() -> None:
    """kernels, /kernels and /kernels/ are all /kernels/; / stays /."""
    for text in ("kernels", "/kernels", "/kernels/"):
        assert parsed("--base-url", text)["base-url"] == "/kernels/"
    assert parsed("--base-url", "/")["base-url"] == "/"


def test_the_option_reference_is_generated_from_the_options() -> None:
    """docs/options.rst is what Options().reference() writes: every option, its variable and file key."""
    reference = Path(__file__).parent.parent / "docs" / "options.rst"
    text = reference.read_text(encoding="utf-8")
    assert text == Options().reference(), "regenerate docs/options.rst (command at its top)"
    for name in Options().settings():
        assert f"``{env_name(name)}``; file key ``{name}``" in text
