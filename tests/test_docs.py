"""The documentation: nothing the README said is lost, every code block of docs/ runs, every
`python -m tornsession` command named exists, every public name has a reference entry, and the
built site's internal links all resolve in a real browser.

The site is built with `mkdocs build --strict` (requirements-docs.txt); without MkDocs, Selenium or
Chromium those tests are skipped, except under CI=true, where they fail.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urlsplit

import pytest
import tornsession
import tornsession.__main__
from support.chromium import chromium, unavailable
from support.doc_blocks import code_blocks, headings, run_python_blocks
from support.processes import REPO

DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
README = REPO / "README.md"

# The headings of the README before issue 23 moved its manual into docs/ (`git show
# 2159ebc:README.md`): each must still be a heading of the README or of a page of docs/.
README_SECTIONS_BEFORE = [
    "tornsession",
    "Try it",
    "Quick start for a new app",
    "Install",
    "Building wheels",
    "Migrating from the original `session.py`",
    "API",
    "Options",
    "Cookies: names and formats",
    "Lifecycle",
    "When sessions load and save",
    "Requests of one session take turns",
    "A save never brings a session back",
    "Expiry",
    "Login and logout",
    'Per-user sessions: "log out everywhere", a user\'s sessions, "remember me"',
    "`SessionMixin` and async",
    "After `flush()`, and WebSocket handlers",
    "Concurrent writers: `detect_conflicts`",
    "Secret rotation",
    "Flash messages",
    "Size limit",
    "Logging",
    "Migrating the original's session files",
    "Testing your app",
    "Stores",
    "Store URLs",
    "MemoryStore",
    "FileStore",
    "SqliteStore",
    "RedisStore",
    "RedisClusterStore",
    "RedisSentinelStore",
    "MemcachedStore",
    "CookieStore: the session sealed in its cookie, no server",
    "Your own store",
    "Running the tests",
    "Deploying",
    "Operating: one URL, metrics, moving to another store",
    "Performance",
    "Reliability",
    "Security choices",
    "Development",
    "Layout",
]


def test_every_readme_section_of_before_is_somewhere() -> None:
    found = set(headings(README.read_text()))
    for page in PAGES:
        found |= set(headings(page.read_text()))
    missing = [heading for heading in README_SECTIONS_BEFORE if heading not in found]
    assert not missing, f"sections of the old README that are no heading now: {missing}"


def test_the_readme_is_short_and_links_every_guide_page() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)", text))
    assert linked == {page.name for page in PAGES}, "every page of docs/ is linked from the README"


def test_the_readme_and_the_stores_page_show_the_same_store_table() -> None:
    def table(text: str) -> list[str]:
        lines = text.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("| store | shared by"))
        rows: list[str] = []
        for line in lines[start + 2 :]:
            if not line.startswith("|"):
                return rows
            rows.append(line)
        return rows

    readme = table(README.read_text())
    assert len(readme) == 8
    assert readme == table((DOCS / "stores.md").read_text())


def test_the_readmes_relative_links_name_files_that_exist() -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text()):
        if "://" not in target:
            assert (REPO / target).exists(), f"README links to {target}, which does not exist"


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_every_python_block_of_a_page_runs(page: Path, tmp_path: Path) -> None:
    run_python_blocks(page, tmp_path)


def test_every_fragment_gives_its_reason() -> None:
    fragments = []
    for page in [README, *PAGES]:
        for block in code_blocks(page.read_text()):
            if block.fragment is not None:
                assert block.fragment, f"{page.name}:{block.line}: a fragment without a reason"
                assert block.language == "python", f"{page.name}:{block.line}: only python runs"
                fragments.append(f"{page.name}:{block.line}")
    # Few on purpose: a block that cannot run is one the tests cannot keep right.
    assert len(fragments) <= 3, fragments


def test_the_pages_have_python_blocks_and_they_are_counted() -> None:
    blocks = [b for page in PAGES for b in code_blocks(page.read_text()) if b.language == "python"]
    assert len(blocks) >= 25


def test_the_testing_pages_pytest_examples_pass_under_pytest(tmp_path: Path) -> None:
    """The pytest functions of the testing pages ask for fixtures: run them as a test file."""
    for page in ("testing.md", "migrate-and-testing.md"):
        blocks = [
            b.source for b in code_blocks((DOCS / page).read_text()) if b.language == "python"
        ]
        test_file = tmp_path / f"test_{page.removesuffix('.md').replace('-', '_')}.py"
        test_file.write_text("\n".join(blocks).replace("/srv/myapp", str(tmp_path)))
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert re.search(r"\b[2-9] passed|\b\d\d+ passed", run.stdout), run.stdout


def subcommands() -> set[str]:
    names: set[str] = set()
    for action in tornsession.__main__.parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            names |= set(action.choices)
    return names


def test_every_python_m_tornsession_command_in_the_docs_exists() -> None:
    commands = subcommands()
    assert {"cleanup", "migrate", "end-user", "end-session", "stats", "copy"} <= commands
    seen = 0
    for page in [README, *PAGES]:
        for block in code_blocks(page.read_text()):
            if block.language not in {"sh", "bash", "shell", "console"}:
                continue
            for module, word in re.findall(
                r"python -m (tornsession[\w.]*)(?:\s+([a-z][\w-]*))?", block.source
            ):
                seen += 1
                assert importlib.util.find_spec(module), f"{page.name}: no module {module}"
                if module == "tornsession" and word:
                    assert word in commands, f"{page.name}: `python -m tornsession {word}`"
    assert seen >= 15


# The site, built once per test process.


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    for tool in ("mkdocs", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(tool.split(".")[0]) is None:
            unavailable(f"{tool} is not installed (pip install -r requirements-docs.txt)")
    folder = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(folder)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    yield folder


def inventory(site: Path) -> set[str]:
    """The object names of the site's Sphinx inventory (objects.inv, version 2)."""
    data = (site / "objects.inv").read_bytes()
    header_end = 0
    for _ in range(4):  # four header lines, then the zlib-compressed entries
        header_end = data.index(b"\n", header_end) + 1
    entries = zlib.decompress(data[header_end:]).decode()
    return {line.split(" ", 1)[0] for line in entries.splitlines() if line}


def test_every_public_name_has_a_reference_entry(site: Path) -> None:
    names = inventory(site)
    missing = [name for name in tornsession.__all__ if f"tornsession.{name}" not in names]
    assert not missing, f"names of tornsession.__all__ with no reference entry: {missing}"
    for module in ("testing", "metrics", "migrate"):
        public = importlib.import_module(f"tornsession.{module}").__all__
        missing = [n for n in public if f"tornsession.{module}.{n}" not in names]
        assert not missing, f"tornsession.{module}: {missing}"


def test_every_public_member_of_the_referenced_modules_has_text() -> None:
    # The reference shows a name with its signature even without a docstring: every public
    # member of the modules it documents must say what it is. Read as the site reads them
    # (griffe, from the source and the stub), never by importing the extension.
    try:
        import griffe
    except ImportError:
        unavailable("griffe is not installed (pip install -r requirements-docs.txt)")
    missing: list[str] = []

    def walk(obj: Any, prefix: str) -> None:
        for name, member in obj.members.items():
            if name.startswith("_") or member.is_alias:
                continue
            if not member.docstring:
                missing.append(prefix + name)
            if member.is_class:
                walk(member, f"{prefix}{name}.")

    for module in ("tornsession.testing", "tornsession.metrics", "tornsession.migrate"):
        walk(griffe.load(module, search_paths=[str(REPO / "python")]), module + ".")
    assert not missing, f"public members with no docstring: {missing}"


def test_the_site_builds_and_every_internal_link_resolves_in_chromium(site: Path) -> None:
    # 404.html is for a web server (its links are from the server's root); file:// never shows it.
    pages = sorted(p for p in site.rglob("*.html") if p.name != "404.html")
    assert len(pages) >= len(PAGES) + 4  # docs/, the README, SECURITY, BENCHMARKS, CHANGELOG
    root = site.as_uri() + "/"
    links: dict[str, set[str]] = {}  # a page's URL -> the internal hrefs on it
    ids: dict[str, set[str]] = {}  # a page's URL -> its element ids
    with chromium() as browser:
        for page in pages:
            url = page.as_uri()
            browser.get(url)
            hrefs = browser.execute_script(
                "return Array.from(document.querySelectorAll('a[href]'), a => a.href)"
            )
            ids[url] = set(
                browser.execute_script(
                    "return Array.from(document.querySelectorAll('[id]'), e => e.id)"
                )
            )
            links[url] = {href for href in hrefs if href.startswith(root)}
            # A file link that leaves the site (a path the hook did not turn into a page).
            outside = [h for h in hrefs if h.startswith("file:") and not h.startswith(root)]
            assert not outside, f"{page.relative_to(site)} links out of the site: {outside}"
            # Offline: nothing the page loads comes from the network.
            loaded = browser.execute_script(
                "return Array.from(document.querySelectorAll("
                "'script[src], link[rel=stylesheet], img[src]'), e => e.src || e.href)"
            )
            remote = [u for u in loaded if not u.startswith("file:")]
            assert not remote, f"{page.relative_to(site)} loads {remote}"
    checked = 0
    broken = []
    for url, hrefs in links.items():
        for href in hrefs:
            target, anchor = urldefrag(href)
            path = Path(unquote(urlsplit(target).path))
            if not path.is_file() and not (path / "index.html").is_file():
                broken.append(f"{url}: {href} (no such page)")
            elif anchor and target in ids and unquote(anchor) not in ids[target]:
                broken.append(f"{url}: {href} (no element with that id)")
            elif anchor and target not in ids:
                broken.append(f"{url}: {href} (an anchor into a file that is no page)")
            checked += 1
    assert not broken, "\n".join(broken)
    assert checked > 500
