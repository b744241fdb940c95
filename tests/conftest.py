"""Shared fixtures: Tornado apps over real HTTP, stores in temporary folders."""

from __future__ import annotations

pytest_plugins = ["servers"]
