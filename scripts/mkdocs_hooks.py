"""MkDocs hooks (mkdocs.yml `hooks:`): the repository's own Markdown files become pages of the
site, and the links between them work in both places.

The README is the site's home page (index.md); SECURITY.md, BENCHMARKS.md and CHANGELOG.md are
pages under project/. A link written for the forge (`docs/options.md` in the README,
`../SECURITY.md` in a page of docs/) is rewritten into the link between the two pages, so one
text serves both; any other link is left for MkDocs to check.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

# The files outside docs/ that are pages, by their path in the repository, and their page.
ROOT_PAGES = {
    "README.md": "index.md",
    "SECURITY.md": "project/SECURITY.md",
    "BENCHMARKS.md": "project/BENCHMARKS.md",
    "CHANGELOG.md": "project/CHANGELOG.md",
}
PAGE_SOURCES = {page: source for source, page in ROOT_PAGES.items()}
# An inline Markdown link's target: ](target) or ](target#anchor).
LINK = re.compile(r"\]\(([^)\s#]+\.md)(#[^)\s]*)?\)")


def on_files(files: Files, config: Any) -> Files:
    root = Path(config.config_file_path).parent
    for source, page in ROOT_PAGES.items():
        files.append(File.generated(config, page, abs_src_path=str(root / source)))
    return files


def page_of(repo_path: str) -> str | None:
    """The page a Markdown file of the repository is, or None when it is none."""
    if repo_path in ROOT_PAGES:
        return ROOT_PAGES[repo_path]
    if repo_path.startswith("docs/"):
        return repo_path.removeprefix("docs/")
    return None


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    here = page.file.src_uri
    source = PAGE_SOURCES.get(here, "docs/" + here)

    def rewrite(match: re.Match[str]) -> str:
        target, anchor = match.group(1), match.group(2) or ""
        if "://" in target:
            return match.group(0)
        linked = page_of(posixpath.normpath(posixpath.join(posixpath.dirname(source), target)))
        if linked is None:
            return match.group(0)
        relative = posixpath.relpath(linked, posixpath.dirname(here) or ".")
        return f"]({relative}{anchor})"

    return LINK.sub(rewrite, markdown)
