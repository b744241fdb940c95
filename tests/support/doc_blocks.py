"""The code blocks of a Markdown page, and running its ``python`` blocks like a doctest file.

A ``python`` block runs unless the line before its fence is an HTML comment marking it a
fragment, with the reason: ``<!-- fragment: needs a running Redis -->``.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import re
import types
import unittest
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tornado.web
import tornsession

from support.handlers import CookieJarHandler

# An opening fence: its indent, its backticks (three or more) and its language.
OPENING = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})(?P<language>[\w+-]*)\s*$")
FRAGMENT = re.compile(r"^\s*<!--\s*fragment\b:?(?P<reason>.*?)-->\s*$")


@dataclass
class Block:
    language: str
    source: str
    line: int  # of the opening fence, from 1
    fragment: str | None  # the reason given, "" when none; None when the block is not one


def code_blocks(text: str) -> list[Block]:
    """Every fenced block, in order; a block inside a longer fence (an example of Markdown) is
    part of that block's source, not a block of its own."""
    lines = text.split("\n")
    blocks: list[Block] = []
    number = 0
    while number < len(lines):
        opening = OPENING.match(lines[number])
        if opening is None:
            number += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        closing = re.compile(rf"^ *`{{{len(fence)},}}\s*$")
        end = number + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        body = [
            line[indent:] if line[:indent].isspace() else line for line in lines[number + 1 : end]
        ]
        marker = FRAGMENT.match(lines[number - 1]) if number else None
        fragment = marker["reason"].strip() if marker else None
        blocks.append(Block(opening["language"], "\n".join(body) + "\n", number + 1, fragment))
        number = end + 1
    return blocks


def headings(text: str) -> list[str]:
    """The text of every ATX heading outside the code blocks."""
    inside: str | None = None
    found = []
    for line in text.split("\n"):
        opening = OPENING.match(line)
        if inside is None and opening:
            inside = opening["fence"]
        elif inside is not None and re.match(rf"^ *`{{{len(inside)},}}\s*$", line):
            inside = None
        elif inside is None and (heading := re.match(r"^#{1,6} +(.*?)\s*#*\s*$", line)):
            found.append(heading[1])
    return found


def namespace(tmp_path: Path, name: str) -> dict[str, Any]:
    """What the prose around the blocks assumes exists."""
    return {
        "__name__": name,
        "__builtins__": builtins,
        "tornado": tornado,
        "session": tornsession,
        "tornsession": tornsession,
        # 32 bytes or more: a shorter one is warned about (WeakSecretWarning).
        "secret": "a-secret-for-the-docs-" + "x" * 32,
        "store": tornsession.MemoryStore(),
        "session_dir": str(tmp_path / "sessions"),
        "handler": CookieJarHandler(),
        "handlers": [],
        "check_password": lambda *args: True,
        "name": "ann",
    }


def run_python_blocks(page: Path, tmp_path: Path) -> dict[str, Any]:
    """Runs every python block of ``page`` that is not a fragment, in order, in one namespace
    (paths under /var/lib/myapp redirected to ``tmp_path``); blocks with top-level ``await`` run
    on an event loop, and unittest cases the blocks define are run too. Returns the namespace."""
    names = namespace(tmp_path, page.stem)
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    for block in code_blocks(page.read_text()):
        if block.language != "python" or block.fragment is not None:
            continue
        source = block.source.replace("/var/lib/myapp", str(tmp_path))
        where = f"{page.name}, the python block at line {block.line}"
        code = compile(source, where, "exec", flags=flags)
        try:
            if code.co_flags & 0x80:  # CO_COROUTINE: the block awaits
                asyncio.run(types.FunctionType(code, names)())
            else:
                exec(code, names)
        except Exception as error:
            raise AssertionError(f"{where} failed:\n{block.source}") from error
    cases = [v for v in names.values() if isinstance(v, type) and issubclass(v, unittest.TestCase)]
    if cases:
        suite = unittest.TestSuite(
            unittest.defaultTestLoader.loadTestsFromTestCase(c) for c in cases
        )
        result = unittest.TextTestRunner(verbosity=0).run(suite)
        assert result.wasSuccessful(), f"{page.name}: {result.failures + result.errors}"
    return names
