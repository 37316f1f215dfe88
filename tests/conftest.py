"""Shared test set-up. Area fixtures live in tests/fixtures_<area>.py and load as plugins."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

pytest_plugins = ["fixtures_sim", "fixtures_nuke"]
