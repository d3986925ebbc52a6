"""The README is a front page: short, its two commands first, every docs/ page linked, and
every relative link (README and docs/) leads to a file."""

import os
import re

from tests.conftest import REPO_ROOT


def read(path):
    with open(os.path.join(REPO_ROOT, path), encoding="utf-8") as f:
        return f.read()


def test_the_readme_is_a_front_page_linking_every_docs_page():
    text = read("README.md")
    assert len(text.splitlines()) <= 120
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    assert blocks[:2] == ["bash scripts/setup.sh && python3 tools/demo.py\n",
                          "bash scripts/setup.sh --test && python3 -m pytest -q tests\n"]
    pages = {f for f in os.listdir(os.path.join(REPO_ROOT, "docs")) if f.endswith(".md")}
    linked = set(re.findall(r"\]\(docs/([\w.]+\.md)", text))
    assert pages <= linked, f"docs pages not linked from README.md: {sorted(pages - linked)}"


def test_relative_links_lead_to_files():
    docs = [os.path.join("docs", f) for f in os.listdir(os.path.join(REPO_ROOT, "docs")) if f.endswith(".md")]
    for path in ["README.md", *docs]:
        prose = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", read(path), flags=re.S))
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", prose):
            if "://" in target:
                continue
            full = os.path.normpath(os.path.join(REPO_ROOT, os.path.dirname(path), target))
            assert os.path.exists(full), f"{path}: link to {target}"
