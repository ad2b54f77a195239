"""Byte links the bridge and the firmware emulator talk over: a serial port or a pseudo-terminal."""

from __future__ import annotations

import os
import select
import termios
import tty
from typing import Protocol


class Link(Protocol):
    def read(self, timeout_s: float) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class SerialLink:
    """A real UART (or a PTY path) through pyserial."""

    def __init__(self, port: str, baudrate: int = 115200) -> None:
        import serial

        try:
            self._serial = serial.Serial(port, baudrate=baudrate, timeout=0)
        except serial.SerialException as exc:
            raise OSError(f"cannot open serial port {port}: {exc}") from None

    def read(self, timeout_s: float) -> bytes:
        self._serial.timeout = timeout_s
        waiting = max(1, self._serial.in_waiting)
        return self._serial.read(waiting)

    def write(self, data: bytes) -> None:
        self._serial.write(data)
        self._serial.flush()

    def close(self) -> None:
        self._serial.close()


class FdLink:
    """The master side of a pseudo-terminal (or any file descriptor)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read(self, timeout_s: float) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if not ready:
            return b""
        try:
            return os.read(self.fd, 4096)
        except OSError:  # the other side closed
            return b""

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def close(self) -> None:
        os.close(self.fd)


def open_pty() -> tuple[FdLink, str]:
    """A raw pseudo-terminal pair: the link on the master side and the slave's path for others."""
    master, slave = os.openpty()
    tty.setraw(slave)
    attrs = termios.tcgetattr(slave)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    path = os.ttyname(slave)
    return FdLink(master), path
