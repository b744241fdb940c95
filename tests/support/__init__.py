"""What the tests share, in one place: server processes (``servers``), app processes
(``processes``), an HTTP client with a cookie jar (``browser``), Python test stores (``stores``),
the store of every kind (``any_store``), and the command line of the apps under tests/apps
(``apps``). Importable as ``support`` (pytest's pythonpath, and PYTHONPATH of the apps)."""
