"""The pytest plugin (the ``pytest11`` entry point): the fixtures of tornsession.testing, where
they are defined and documented; only imported with pytest."""

from tornsession.testing import (
    tornsession_client,
    tornsession_manager,
    tornsession_secret,
    tornsession_serve,
)

__all__ = ["tornsession_client", "tornsession_manager", "tornsession_secret", "tornsession_serve"]
