"""pytest plugin for the Tornado-version runs (``make test-tornado-versions``): harness only.

pytest (8.x) instantiates every ``unittest.TestCase`` subclass once at collection with the
method name ``"runTest"`` to look for fixtures. Tornado before 6.1 wraps the named method in
``AsyncTestCase.__init__`` and so fails there with ``AttributeError: 'XTest' object has no
attribute 'runTest'`` before any test runs. Tornado 6.1 dropped that wrapping; this plugin does
the same for 6.0 (the instance pytest makes at collection is never run). It changes nothing on
Tornado 6.1 and newer, and nothing in tornsession.
"""

from __future__ import annotations

import tornado
import tornado.testing

if tornado.version_info < (6, 1):
    _original_init = tornado.testing.AsyncTestCase.__init__

    def _init(self: tornado.testing.AsyncTestCase, methodName: str = "runTest") -> None:
        try:
            _original_init(self, methodName)
        except AttributeError:
            if methodName != "runTest" or hasattr(self, methodName):
                raise
            # Everything but the wrapping of the (missing) method is already done.
            self._test_generator = None

    tornado.testing.AsyncTestCase.__init__ = _init  # type: ignore[method-assign]
