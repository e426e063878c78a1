"""Configuration: precedence of flags, environment and TOML; secrets kept out of the description."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from atrepo.core.errors import InputFileError
from atrepo.host.config import HostConfig, load_config, load_secrets


def test_defaults() -> None:
    config = load_config({}, env={})
    assert (config.host, config.port, config.plc_port) == ("127.0.0.1", 2583, 2582)
    assert config.data_dir == Path("data")
    assert config.user_domains == (".test",)
    assert config.plc_url is None and config.relays == ()
    assert config.event_retention_hours == 72
    assert config.resolved_public_url() == "http://127.0.0.1:2583"
    assert config.resolved_public_url(4000) == "http://127.0.0.1:4000"


def test_precedence_flags_over_env_over_toml(tmp_path: Path) -> None:
    toml = tmp_path / "host.toml"
    toml.write_text(
        'port = 1000\nhost = "0.0.0.0"\nuser_domains = [".a.example", ".b.example"]\n'
        'relays = ["https://relay.example"]\npublic_url = "https://pds.example"\n'
    )
    env = {"ATREPO_PORT": "2000", "ATREPO_HOST": "127.0.0.2", "ATREPO_EVENT_RETENTION_HOURS": "1.5"}
    config = load_config({"port": 3000, "host": None}, env=env, config_file=toml)
    assert config.port == 3000  # flag
    assert config.host == "127.0.0.2"  # environment
    assert config.event_retention_hours == 1.5
    assert config.user_domains == (".a.example", ".b.example")  # TOML
    assert config.relays == ("https://relay.example",)
    assert config.resolved_public_url(9) == "https://pds.example"
    env2 = {"ATREPO_CONFIG": str(toml), "ATREPO_USER_DOMAINS": ".x.example, .y.example"}
    assert load_config(None, env=env2).user_domains == (".x.example", ".y.example")
    assert load_config(None, env=env2).port == 1000


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    toml = tmp_path / "host.toml"
    toml.write_text("prot = 1\n")
    with pytest.raises(InputFileError, match="unknown settings prot"):
        load_config({}, env={}, config_file=toml)
    with pytest.raises(InputFileError, match="ATREPO_PORT"):
        load_config({}, env={"ATREPO_PORT": "many"})
    with pytest.raises(InputFileError, match="user domain"):
        load_config({"user_domains": ("test",)}, env={})
    with pytest.raises(InputFileError, match="public URL"):
        load_config({"public_url": "ftp://x"}, env={})


def test_describe_hides_secrets() -> None:
    config = HostConfig(admin_password="hunter2-admin", jwt_secret="jwt-secret-value")
    shown = config.describe()
    assert shown["admin_password"] == "(set)" and shown["jwt_secret"] == "(set)"
    assert "hunter2" not in repr(shown) and "jwt-secret-value" not in repr(shown)
    assert "hunter2" not in repr(config)
    assert HostConfig().describe()["admin_password"] == "(unset)"


def test_secrets_are_generated_once_with_mode_0600(tmp_path: Path) -> None:
    config = HostConfig(data_dir=tmp_path / "data")
    first = load_secrets(config)
    for name in ("jwt-secret", "rotation.key"):
        path = tmp_path / "data" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_secrets(config)
    assert again.jwt_secret == first.jwt_secret
    assert again.rotation_key == first.rotation_key
    assert load_secrets(HostConfig(data_dir=tmp_path / "data", jwt_secret="given")).jwt_secret == "given"
