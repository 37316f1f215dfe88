"""Shared test set-up. Area fixtures live in tests/fixtures_<area>.py and load as plugins."""

import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

pytest_plugins = ["fixtures_sim", "fixtures_nuke"]


def pytest_configure() -> None:
    """Ctrl-C tests press it as a terminal would. A shell that starts pytest in the background
    without job control (``cmd &`` in a script, ``nohup``) makes it ignore SIGINT, and every
    program it starts inherits that: the command under test would never see the Ctrl-C. A
    user's terminal never ignores it, so neither do the tests."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
