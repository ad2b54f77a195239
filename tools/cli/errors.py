"""The exceptions a user's mistake can raise; the CLI prints them as one line, no traceback."""

from __future__ import annotations


def user_errors() -> tuple[type[BaseException], ...]:
    """Expected error types, imported lazily so no command loads more than it needs."""
    from device.config import ConfigError
    from device.models.bundle import BundleError
    from device.models.signing import KeyFileError
    from device.page.users import UserError
    from device.rules.safety import ProfileError
    from device.state.store import StoreError
    from firmware_bridge.c_export import ExportError
    from model.tracking import TrackingError
    from preprocessing.aim94 import Aim94Error
    from preprocessing.mimic import MimicError
    from tools.ward.broker import BrokerStartError

    return (
        Aim94Error,
        BrokerStartError,
        BundleError,
        ConfigError,
        KeyFileError,
        MimicError,
        ProfileError,
        StoreError,
        UserError,
        ExportError,
        TrackingError,
        OSError,
    )
