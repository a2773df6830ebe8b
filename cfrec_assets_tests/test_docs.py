"""The README and docs/: short enough to read, every cited heading and every link resolves, the
two set-up commands are the ones CI runs, and the FastAPI snippet behaves as a backend should."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

from cfrec_testkit.models import promote_version, version_name, write_model_version

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
SKIPPED_DIRS = {".git", ".venv", "build", "data", "test-output", "node_modules", "__pycache__"}
CITING_FILES = {".py", ".sh", ".yaml", ".yml", ".toml", ".md", ".sql", ".cfg"}
# `docs/serving.md "Recommendations in Supabase"`, `README "X"`, `README.md ("X")`, `README: "X"`
CITATION = re.compile(r'\b(README(?:\.md)?|docs/[\w-]+\.md)(?::|,)?\s\(?"([^"\n]+)"')
DOC_PATH = re.compile(r"\bdocs/[\w-]+\.md\b")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def repo_files() -> list[Path]:
    found = []
    for path in REPO_ROOT.rglob("*"):
        relative = path.relative_to(REPO_ROOT)
        if SKIPPED_DIRS.intersection(relative.parts) or not path.is_file() or path == Path(__file__):
            continue  # (this file's examples of citations are not citations)
        if path.suffix in CITING_FILES or path.name in ("Makefile", "run"):
            found.append(path)
    return found


def headings(markdown: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", markdown.read_text(), flags=re.DOTALL)  # no "# comments" in code blocks
    return {line.lstrip("#").strip() for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_readme_is_a_five_minute_read_with_the_next_steps_early():
    lines = README.read_text().splitlines()
    assert len(lines) <= 150, len(lines)
    assert lines.index("## Three next things to do") < 80


def test_the_two_commands_are_the_ones_ci_runs():
    readme = README.read_text()
    assert "\nmake materialize   #" in readme and "\nmake test          #" in readme
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^test: .*\n(\t.*\n)*\t\$\(PY\) -m pytest -q$", makefile, flags=re.MULTILINE)
    assert re.search(r"^make test\b", (REPO_ROOT / ".ci" / "run").read_text(), flags=re.MULTILINE)


def test_every_cited_heading_exists():
    cited = []
    for path in repo_files():
        text = path.read_text(errors="replace")
        for document in DOC_PATH.findall(text):
            assert (REPO_ROOT / document).is_file(), f"{path.relative_to(REPO_ROOT)} names {document}"
        for document, heading in CITATION.findall(text):
            target = README if document.startswith("README") else REPO_ROOT / document
            if path.name == "README.md" and path.parent != REPO_ROOT and document.startswith("README"):
                continue  # bench/README.md and data/README.md cite themselves by their own name
            cited.append((path.relative_to(REPO_ROOT), document, heading))
            assert heading in headings(target), f'{path.relative_to(REPO_ROOT)} cites {document} "{heading}"'
    assert len(cited) >= 5, cited  # the pattern still finds the project's citations


@pytest.mark.parametrize("document", [README, *DOCS], ids=lambda p: p.name)
def test_every_link_resolves(document: Path):
    for target in LINK.findall(document.read_text()):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked offline
            continue
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        assert resolved.exists(), f"{document.name} links to {target}"
        if anchor:
            assert anchor in {slug(h) for h in headings(resolved)}, f"{document.name} links to {target}"


def test_fastapi_snippet_refuses_bad_n_with_422(tmp_path):
    """docs/serving.md's backend, run as written against a deployed tiny model: n=0 or -1 used to
    reach `recommend` and answer 500."""
    serving = REPO_ROOT / "docs" / "serving.md"
    section = serving.read_text().split("### A FastAPI backend", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL).group(1)
    assert '"s3://models/cfrec"' in snippet
    model = write_model_version(tmp_path / "models", version_name(1), seed=1)
    promote_version(model, tmp_path / "serving")
    namespace: dict = {}
    code = snippet.replace('"s3://models/cfrec"', repr(str(tmp_path / "serving")))
    exec(compile(code, "docs/serving.md", "exec"), namespace)
    try:
        answers = asyncio.run(get_all(namespace["app"], ["3", "0", "-1", "101", "abc"]))
    finally:
        namespace["watcher"].stop()
    ok = answers["3"]
    assert ok.status_code == 200 and len(ok.json()["items"]) == 3 and ok.json()["model_version"] == model.version
    assert {n: answers[n].status_code for n in ("0", "-1", "101", "abc")} == dict.fromkeys(
        ("0", "-1", "101", "abc"), 422
    )


async def get_all(app, values: list[str]) -> dict[str, httpx.Response]:
    """GET /recommendations/ml_1?n=<value> through the ASGI app; an exception in it answers 500."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        return {n: await client.get("/recommendations/ml_1", params={"n": n}) for n in values}
