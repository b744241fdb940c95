"""Floats come back exactly as saved (serde_json's float_roundtrip: without it, values like
1.0657260037416103e216 were read back one ULP off)."""

from __future__ import annotations

import pytest
import tornsession as session
from hypothesis import given, settings
from hypothesis import strategies as st


def loaded_back(x: float) -> float:
    """``x`` saved in a session and loaded again."""
    manager = session.SessionManager("secret")
    s = manager.get()
    s["x"] = x
    manager.set(s)
    loaded: float = manager.get(s.session_id, s.hmac_digest)["x"]
    return loaded


@pytest.mark.parametrize(
    "x", [1.0657260037416103e216, 5.139370855890192e-250, -2.6979400729871033e97]
)
def test_known_floats_load_back_equal(x: float) -> None:
    assert loaded_back(x) == x


@settings(max_examples=2000, deadline=None, database=None)
@given(x=st.floats(allow_nan=False, allow_infinity=False))
def test_any_finite_float_loads_back_equal(x: float) -> None:
    assert loaded_back(x) == x
