"""``--credentials``: one option and one reading of credentials.txt for publish, monitor and doctor."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from device.config import BrokerConfig
from tools.cli.common import role_logins
from tools.cli.main import main

WARD = (
    "sensor bed7 sensor-bed7 s7\nsensor bed8 sensor-bed8 s8\nmonitor * monitor-ward3 m3\nflasher * flasher-ward3 f3\n"
)


def test_each_role_logs_in_as_its_user_for_every_device(tmp_path):
    credentials = tmp_path / "credentials.txt"
    credentials.write_text(WARD)
    broker = BrokerConfig(url="mqtts://broker.ward.local:8883")
    logins = role_logins(credentials, ["bed7", "bed8"], ("monitor",), broker)
    assert logins["monitor"].credentials == ("monitor-ward3", "m3") and logins["monitor"].host == "broker.ward.local"
    both = role_logins(credentials, ["bed7"], ("sensor", "monitor"), broker)
    assert both["sensor"].credentials == ("sensor-bed7", "s7")
    assert role_logins(None, ["bed7"], ("sensor", "monitor"), broker) == {"sensor": broker, "monitor": broker}
    with pytest.raises(click.BadParameter, match="different sensor users \\(sensor-bed7, sensor-bed8\\)"):
        role_logins(credentials, ["bed7", "bed8"], ("sensor",), broker)


def test_monitor_takes_credentials_and_names_a_missing_monitor_user(tmp_path):
    credentials = tmp_path / "credentials.txt"
    credentials.write_text("sensor bed9 sensor-bed9 s9\n")
    result = CliRunner().invoke(
        main, ["monitor", "--broker", "mqtt://127.0.0.1:1", "--device", "bed9", "--credentials", str(credentials)]
    )
    assert result.exit_code == 2 and "Invalid value for --credentials: has no monitor user for bed9" in result.output
    assert "--credentials" in CliRunner().invoke(main, ["monitor", "--help"]).output
