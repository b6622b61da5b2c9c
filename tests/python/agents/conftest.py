"""The agent tests use the gateway tests' harness (tests/python/conftest.py), loaded under
another module name so that it does not shadow this file."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("gateway_harness", Path(__file__).resolve().parents[1] / "conftest.py")
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

stack = harness.stack
embed_stack = harness.embed_stack
