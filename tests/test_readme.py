"""Every Python code block in README.md runs, in order, in one namespace (like a doctest file).

The namespace starts with what the prose around the blocks assumes (tests/support/doc_blocks.py):
`tornado.web`, the module as `session` and `tornsession`, a `secret`, a `store`, a `session_dir`,
a `handler` with the cookie methods and the app's `handlers`. Paths under /var/lib/myapp are
redirected to a temporary folder. The pages of docs/ are run the same way by tests/test_docs.py.
"""

from __future__ import annotations

from pathlib import Path

from support.doc_blocks import code_blocks, run_python_blocks

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_has_python_examples() -> None:
    python = [b for b in code_blocks(README.read_text()) if b.language == "python"]
    assert len(python) >= 2
    assert not [b for b in python if b.fragment is not None], "the README's blocks all run"


def test_every_python_block_in_the_readme_runs(tmp_path: Path) -> None:
    names = run_python_blocks(README, tmp_path)
    assert "BaseHandler" in names and "main" in names, "the quick start's app is defined"
