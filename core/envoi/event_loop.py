"""The event loop envoi runs on: uvloop (a default dependency where it has wheels) unless told
otherwise, the stock asyncio loop when uvloop is absent or ``--event-loop asyncio`` asks for it."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import platform

LOOP_ENV = "ENVOI_EVENT_LOOP"
CHOICES = ("auto", "uvloop", "asyncio")


class EventLoopError(Exception):
    """The loop asked for cannot be had (``--event-loop uvloop`` without uvloop)."""


def default_choice() -> str:
    value = os.environ.get(LOOP_ENV, "auto")
    return value if value in CHOICES else "auto"


def check_choice(choice: str) -> None:
    """Raise EventLoopError now (before any fork) if ``choice`` cannot be served."""
    if choice == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError as exc:
            raise EventLoopError("--event-loop uvloop: uvloop is not installed "
                                 "(pip install uvloop, or use --event-loop asyncio)") from exc


def new_event_loop(choice: str = "auto") -> asyncio.AbstractEventLoop:
    """``auto``: uvloop when installed, else asyncio; ``uvloop`` or ``asyncio``: that one."""
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            check_choice(choice)
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()


def describe(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop 0.23.0`` or ``asyncio (CPython 3.11.7)``: for the start log and /server_info."""
    if type(loop).__module__.split(".", 1)[0] == "uvloop":
        return f"uvloop {importlib.metadata.version('uvloop')}"
    return f"asyncio ({platform.python_implementation()} {platform.python_version()})"
