"""The fleet's secret and Redis password options: where they come from, and the refusals that keep them safe."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.python import usage

from kernel_relay.tap import Options

REDIS = "redis://127.0.0.1:6390/4"


def parsed(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No secret from the developer's environment."""
    for name in ("KERNEL_RELAY_TOKEN", "KERNEL_RELAY_FLEET_SECRET", "KERNEL_RELAY_REDIS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def test_a_fleet_without_a_secret_does_not_start() -> None:
    """--redis without a token or fleet secret is a usage error that says what to give."""
    with pytest.raises(usage.UsageError, match="needs a secret"):
        parsed("--redis", REDIS)


def test_the_fleet_secret_comes_from_a_file_the_environment_or_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file's first line, then --fleet-secret, then the environment, then the token."""
    secret = tmp_path / "secret"
    secret.write_text("from-the-file\nignored\n")
    assert parsed("--redis", REDIS, "--fleet-secret-file", str(secret))["fleet-secret"] == (
        "from-the-file"
    )
    assert parsed("--redis", REDIS, "--token", "tok")["fleet-secret"] == "tok"
    monkeypatch.setenv("KERNEL_RELAY_FLEET_SECRET", "from-the-env")
    assert parsed("--redis", REDIS, "--token", "tok")["fleet-secret"] == "from-the-env"
    with pytest.raises(usage.UsageError, match="not both"):
        parsed("--redis", REDIS, "--fleet-secret", "a", "--fleet-secret-file", str(secret))
    with pytest.raises(usage.UsageError, match="empty"):
        (tmp_path / "empty").write_text("\n")
        parsed("--redis", REDIS, "--fleet-secret-file", str(tmp_path / "empty"))
    with pytest.raises(usage.UsageError, match="--fleet-secret-file"):
        parsed("--redis", REDIS, "--fleet-secret-file", str(tmp_path / "missing"))


def test_the_redis_password_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The password joins the URL from --redis-password-file or the environment; never two of them."""
    password = tmp_path / "password"
    password.write_text("pw-file\n")
    with_file = parsed("--redis", REDIS, "--token", "t", "--redis-password-file", str(password))
    assert with_file["redis"].password == "pw-file"
    assert "pw-file" not in str(with_file["redis"])
    monkeypatch.setenv("KERNEL_RELAY_REDIS_PASSWORD", "pw-env")
    assert parsed("--redis", REDIS, "--token", "t")["redis"].password == "pw-env"
    # One in the URL wins over the environment's; with a file as well, it is a mistake.
    in_url = "redis://:pw-url@127.0.0.1:6390/4"
    assert parsed("--redis", in_url, "--token", "t")["redis"].password == "pw-url"
    with pytest.raises(usage.UsageError, match="not both"):
        parsed("--redis", in_url, "--token", "t", "--redis-password-file", str(password))
