"""The README and the pages of docs/: every page linked from the README, every relative link
and `#anchor` resolves (GitHub's heading anchors). Their examples run in test_docs_serving.py and
test_readme_own_recordings.py; the README's two commands in CI."""

import re
from pathlib import Path

import pytest
from helpers import in_one_backend_pass

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
pytestmark = in_one_backend_pass("torch", "checking the documentation's links")


def prose(text):
    """`text` without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def anchors(page):
    """GitHub's anchors of `page`'s headings: lower case, punctuation but `-` and `_` dropped,
    spaces as `-`."""
    headings = re.findall(r"^#{1,6} (.+)$", prose(page.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def links(page):
    return [target for target in re.findall(r"\]\(([^)\s]+)\)", prose(page.read_text()))
            if not target.startswith(("http://", "https://", "mailto:"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_link_resolves(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(ROOT) if ROOT in file.parents else file}")
        elif anchor and anchor not in anchors(file):
            broken.append(f"{target}: no heading with the anchor #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


def test_every_page_is_linked_from_the_readme_and_the_readme_stays_short():
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(ROOT / "README.md")}
    assert set(PAGES[1:]) <= linked, f"docs pages the README does not link: {sorted(set(PAGES[1:]) - linked)}"
    assert len((ROOT / "README.md").read_text().splitlines()) <= 220, "the README is an overview: details in docs/"


def test_the_checks_find_a_broken_anchor(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A title (with `code`)\n\n[here](#a-title-with-code) [gone](#nothing)\n"
                    "```\n# not a heading\n```\n")
    assert anchors(page) == {"a-title-with-code"} and links(page) == ["#a-title-with-code", "#nothing"]
