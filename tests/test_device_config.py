"""Device configuration: typed, validated, unknown keys rejected, options override the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from device.config import ConfigError, DeviceConfig, HttpConfig, load_config
from device.rules.safety import SafetyProfile
from tools.cli.main import main

GOOD = """
device_id = "bed7"
state_dir = "/tmp/advisor-bed7"
clock = "event"

[broker]
url = "mqtts://nurse:s3cret@broker.ward:8884"
protocol = "3.1.1"

[http]
host = "0.0.0.0"
port = 8081
token = "ward7-pin-2231"

[safety.default]
max_single_units = 12

[safety.patients."p-21"]
max_above_usual_units = 2

[checks]
times = ["08:00", "12:00", "18:00", "22:00"]

[checks.patients."p-21"]
times = ["08:00", "03:00"]
"""


def write(tmp_path: Path, text: str, name: str = "device.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_full_config_file(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    assert config.device_id == "bed7" and config.clock == "event"
    assert config.broker.tls and config.broker.host == "broker.ward" and config.broker.port == 8884
    assert config.broker.credentials == ("nurse", "s3cret")
    assert config.broker.display_url == "mqtts://broker.ward:8884"
    assert config.http == HttpConfig("0.0.0.0", 8081, "ward7-pin-2231")
    assert config.http.exposed and "ward7-pin-2231" not in repr(config)
    assert config.safety.default.max_single_units == 12
    p21 = config.safety.for_patient("p-21")
    assert p21.max_above_usual_units == 2 and p21.max_single_units == 12  # merged onto the default
    assert config.safety.for_patient("other") == config.safety.default
    assert config.client_id == "advisor-device-bed7"


def test_defaults_are_conservative_and_local():
    config = DeviceConfig()
    assert config.http.host == "127.0.0.1" and config.http.port == 8080
    assert config.clock == "wall" and config.broker.protocol == "5"
    assert config.safety.default == SafetyProfile()


def test_password_never_in_repr(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    assert "s3cret" not in repr(config)
    assert "s3cret" not in config.broker.display_url


def test_credentials_from_environment(monkeypatch):
    monkeypatch.setenv("ADVISOR_MQTT_USERNAME", "envuser")
    monkeypatch.setenv("ADVISOR_MQTT_PASSWORD", "envpass")
    config = load_config(None, {"broker.url": "mqtt://localhost:1883"})
    assert config.broker.credentials == ("envuser", "envpass")


def test_overrides_win_and_pass_the_same_checks(tmp_path):
    config = load_config(write(tmp_path, GOOD), {"device_id": "bed8", "broker.url": "mqtt://h:1", "clock": "wall"})
    assert config.device_id == "bed8" and config.broker.url == "mqtt://h:1" and config.clock == "wall"
    assert config.broker.protocol == "3.1.1"  # untouched fields stay
    with pytest.raises(ConfigError, match="clock must be one of"):
        load_config(write(tmp_path, GOOD), {"clock": "sundial"})
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(None, {"brokr.url": "mqtt://h:1"})
    with pytest.raises(ConfigError, match="broker must be a table"):
        load_config(write(tmp_path, 'broker = "mqtt://h:1"\n'), {"broker.url": "mqtt://h:2"})


@pytest.mark.parametrize(
    "text, words",
    [
        ('colour = "red"', "unknown setting(s): colour"),
        ('[broker]\nurl = "http://x"', "mqtt://host:1883 or mqtts://host:8883"),
        ('[broker]\nurl = "mqtt://x:99999"', "invalid port"),
        ('[broker]\nurl = "mqtt://x/path"', "nothing after"),
        ('[broker]\nhost = "x"', "broker.host"),
        ('[broker]\nkeepalive_s = "30"', "broker.keepalive_s must be an integer"),
        ("[http]\nport = 70000", "http.port"),
        ('clock = "sundial"', "clock must be one of"),
        ('device_id = "bed/7"', "device id"),
        ('device_id = "#"', "device id"),
        ("[safety.default]\nmax_single_units = 500", "max_single_units"),
        ("[safety.default]\nlow_glucose_mg_dl = 40", "may not be below 70"),
        ("[safety.default]\nbolus = 3", "unknown safety setting"),
        ('[safety.patients."p-1"]\nmax_daily_regular_units = 1000', "max_daily_regular_units"),
        ('timezone = "Mars/Olympus"', "not an IANA time zone"),
        ('earliest_event_date = "yesterday"', "earliest_event_date must be a date"),
        ('[http]\nallowed_hosts = "bed7"', "http.allowed_hosts must be a list of strings"),
        ('trust = "key.pub"', "trust must be a list of paths"),
        ("db_busy_timeout_s = true", "db_busy_timeout_s must be a number"),
        ('allow_downgrade = "yes"', "allow_downgrade must be true or false"),
        ("[broker]\nca_file = 3", "broker.ca_file must be a path or null"),
        ('broker = "mqtt://x"', "broker must be a table of settings"),
        ("[safety.patients]\np1 = 3", "safety.default and safety.patients.<id> must be tables"),
        ("not toml at all [", "not valid TOML"),
    ],
)
def test_bad_configs_are_rejected(tmp_path, text, words):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert words in str(caught.value)


def test_json_config(tmp_path):
    config = load_config(write(tmp_path, '{"device_id": "bed9", "http": {"port": 9000}}', "c.json"))
    assert config.device_id == "bed9" and config.http.port == 9000


@pytest.mark.parametrize(
    "value, ok", [("127.0.0.1:8080", True), ("[::1]:80", True), ("8080", False), ("host:port", False)]
)
def test_http_option(value, ok):
    if ok:
        assert HttpConfig.parse(value).port in (8080, 80)
    else:
        with pytest.raises(ConfigError):
            HttpConfig.parse(value)


def test_check_config_command(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["device", "check-config", str(write(tmp_path, GOOD))])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output and "mqtts://broker.ward:8884" in result.output
    assert "s3cret" not in result.output
    assert "checks     08:00, 12:00, 18:00, 22:00" in result.output and "p-21: 08:00, 03:00" in result.output

    bad = runner.invoke(main, ["device", "check-config", str(write(tmp_path, "colour = 1", "bad.toml"))])
    assert bad.exit_code == 1
    assert bad.output.strip().splitlines()[-1] == "Error: unknown setting(s): colour"

    missing = runner.invoke(main, ["device", "check-config", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 1 and "cannot read config" in missing.output


def test_an_exposed_page_needs_a_token(tmp_path, monkeypatch):
    monkeypatch.delenv("ADVISOR_PAGE_TOKEN", raising=False)
    with pytest.raises(ConfigError, match=r"reachable from the network: set http\.token"):
        load_config(write(tmp_path, GOOD.replace('token = "ward7-pin-2231"\n', "")))
    with pytest.raises(ConfigError, match="at least 6 characters"):
        HttpConfig("0.0.0.0", 8081, "1234")
    assert not HttpConfig("127.0.0.1", 8080).exposed and HttpConfig().action_token is None
    monkeypatch.setenv("ADVISOR_PAGE_TOKEN", "from-the-env")
    assert HttpConfig("0.0.0.0", 8081).action_token == "from-the-env"
    assert HttpConfig.parse("0.0.0.0:9000", "ward-pin-77").action_token == "ward-pin-77"


def test_the_readme_config_example_is_a_valid_config(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = readme.split("A complete config file:", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    config = load_config(write(tmp_path, example))
    assert config.device_id == "bed7" and config.bundle is None and config.broker.tls
    p21 = config.safety.for_patient("p-21")
    assert p21.pen_step_units == 1 and p21.insulin_sensitivity_mg_dl_per_u == 45 and p21.carb_ratio_g_per_u == 12
    assert p21.max_single_units == 12  # the default's override, merged
    assert config.profiles["p-30"].weight_kg == 82 and config.profiles["p-30"].age_years == 74
