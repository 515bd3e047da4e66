"""Stored XSS: a campaign folder from someone else whose ids, formulas, messages, labels, file names, model card and
folder name hold HTML, script tags, backticks, quotes and markdown must give a report with nothing executable in it.

The hostile campaign is the synthetic one with its ledger rewritten in place (as a crafted folder would arrive); the
built site is parsed with ``html.parser`` and every page is checked for script tags other than the site's own, ``on*``
attributes and ``javascript:`` URLs, and for the hostile strings shown back as text.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import pytest

XSS_IDS = {
    "Li2O-afl": "<script>alert(1)</script>",
    "NaCl-rs": "x`<img src=x onerror=alert(2)>",
    "LiO2-hyp": "q\"uo'te *md* [l](javascript:alert(3)) {: onclick=alert(4) }",
    "Na3Cl-hyp": "</title><script>alert(5)</script>",
}
XSS_TEXT = "<img src=x onerror=alert(6)>`</code>`<svg onload=alert(7)>"
FOLDER = "camp<img src=x onerror=alert(9)>"
MODEL_CARD = ("# Model card: <script>alert(10)</script>\n\nSee [here](javascript:alert(11)) and "
              "![i](x\" onerror=\"alert(12)).\n\n## Data { onclick=alert(13) }\n\n<iframe src=javascript:alert(14)>"
              "</iframe>\n\n[r]: javascript:alert(15)\n\nUse `<this folder>`.\n")


def _rewrite(ledger: Path, model_dir: Path) -> None:
    """Rename the candidates and put markup into every free-text field, as a crafted folder would."""
    conn = sqlite3.connect(ledger)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    for table in tables:
        cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        rows = conn.execute(f"SELECT rowid, * FROM {table}").fetchall()
        for row in rows:
            new = {}
            for col, value in zip(cols, row[1:], strict=True):
                if not isinstance(value, str):
                    continue
                text = value
                for old, hostile in XSS_IDS.items():
                    text = text.replace(old, json.dumps(hostile)[1:-1] if col.endswith("_json") else hostile)
                if text != value:
                    new[col] = text
            if new:
                sets = ", ".join(f'"{c}" = ?' for c in new)
                conn.execute(f"UPDATE {table} SET {sets} WHERE rowid = ?", [*new.values(), row[0]])
    conn.execute("UPDATE candidates SET formula = ?", (XSS_TEXT,))
    conn.execute("UPDATE decisions SET reason = ?", (XSS_TEXT,))
    conn.execute("UPDATE jobs SET failure_reason = ? WHERE state = 'failed'", (XSS_TEXT,))
    conn.execute("UPDATE models SET version = ? || version", (XSS_TEXT,))
    conn.execute("INSERT INTO events (time, round, kind, message) VALUES (1.0, 1, ?, ?)", (XSS_TEXT, XSS_TEXT))
    done = conn.execute("SELECT uuid, result_json FROM jobs WHERE result_json IS NOT NULL").fetchall()
    for uuid, result_json in done:
        result = json.loads(result_json)
        result["label"] = XSS_TEXT
        result["run_type"] = XSS_TEXT
        conn.execute("UPDATE jobs SET result_json = ? WHERE uuid = ?", (json.dumps(result), uuid))
    config = json.loads(conn.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
    config |= {"candidates": [f"{XSS_TEXT}.csv"], "model": str(model_dir), "policy": XSS_TEXT}
    conn.execute("UPDATE meta SET value = ? WHERE key = 'config'", (json.dumps(config),))
    conn.execute("UPDATE meta SET value = ? WHERE key = 'budget_unit'", (json.dumps(XSS_TEXT),))
    conn.commit()
    conn.close()


class _Page(HTMLParser):
    """Collect what would execute in a browser, and the visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.handlers: list[str] = []
        self.js_urls: list[str] = []
        self.title = ""
        self.text: list[str] = []
        self._in: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name, value in attrs:
            if name.lower().startswith("on"):
                self.handlers.append(f"<{tag} {name}={value!r}>")
            if value and value.strip().lower().replace("\x00", "").startswith(("javascript:", "vbscript:")):
                self.js_urls.append(f"<{tag} {name}={value!r}>")
        if tag in ("iframe", "object", "embed"):  # (inline svg icons are the theme's own)
            self.handlers.append(f"<{tag}>")
        if tag == "script":
            self.scripts.append((attributes, ""))
        self._in.append(tag)

    def handle_endtag(self, tag):
        if tag in self._in:
            while self._in and self._in.pop() != tag:
                pass

    def handle_data(self, data):
        if self._in and self._in[-1] == "script" and self.scripts:
            attrs, body = self.scripts[-1]
            self.scripts[-1] = (attrs, body + data)
        elif self._in and self._in[-1] == "title":
            self.title += data
        else:
            self.text.append(data)


def _own_script(attrs: dict[str, str | None], body: str) -> bool:
    """The site's own scripts: bundled files (Material's and screener's assets) and Material's JSON config."""
    src = attrs.get("src")
    if src is not None:
        return "alert" not in src and (src.startswith(("assets/", "../assets/")) or "/assets/" in src)
    return "alert" not in body


@pytest.fixture(scope="module")
def hostile_site(synthetic_campaign, tmp_path_factory):
    from screener.report import build_report

    root = tmp_path_factory.mktemp("xss")
    campaign = Path(shutil.copytree(synthetic_campaign, root / FOLDER, ignore=shutil.ignore_patterns("report")))
    model_dir = campaign / "models" / "initial"
    model_dir.mkdir(parents=True)
    (model_dir / "MODEL_CARD.md").write_text(MODEL_CARD)
    _rewrite(campaign / "ledger.sqlite", model_dir)
    return build_report(campaign, root / "report").site_dir


def test_no_page_holds_an_executable_tag_or_attribute_from_data(hostile_site):
    pages = sorted(hostile_site.rglob("*.html"))
    assert len(pages) >= 9  # overview, table, methods, events, 404 and one page per candidate
    for path in pages:
        source = path.read_text()
        page = _Page()
        page.feed(source)
        name = path.relative_to(hostile_site)
        foreign = [(a, b[:80]) for a, b in page.scripts if not _own_script(a, b)]
        assert foreign == [], f"{name}: script from data: {foreign}"
        assert page.handlers == [], f"{name}: event handler or active element from data: {page.handlers}"
        assert page.js_urls == [], f"{name}: javascript: URL: {page.js_urls}"
        raw_title = re.search(r"<title>(.*?)</title>", source, re.DOTALL)
        assert raw_title is not None and "<" not in raw_title.group(1), f"{name}: markup in <title>: {raw_title}"


def test_search_index_holds_no_markup_from_data(hostile_site):
    """Material's search shows titles and text of the index as HTML: they must be escaped there too."""
    docs = json.loads((hostile_site / "search" / "search_index.json").read_text())["docs"]
    for doc in docs:
        for key in ("title", "text"):
            page = _Page()
            page.feed(doc.get(key) or "")
            assert not page.handlers and not page.js_urls and not page.scripts, (doc["location"], key)


def test_hostile_strings_are_shown_as_text(hostile_site):
    def visible(rel: str) -> tuple[str, str]:
        page = _Page()
        page.feed((hostile_site / rel).read_text())
        return " ".join(page.text), page.title

    text, title = visible("events.html")
    assert XSS_TEXT in text  # the message, character for character
    assert "camp<img src=x onerror=alert(9)>" in title  # the folder name in the site title, as text
    text, _ = visible("candidates.html")
    for hostile in XSS_IDS.values():
        assert hostile in text
    pages = {p.name: p for p in (hostile_site / "candidates").glob("*.html")}
    assert len(pages) == 5 and all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in pages)  # slugs
    page = next(p for p in pages.values() if "x_img_src_x_onerror_alert_2" in p.name)
    text, title = visible(page.relative_to(hostile_site).as_posix())
    assert "x`<img src=x onerror=alert(2)>" in text and "x`<img src=x onerror=alert(2)>" in title
    text, _ = visible("methods.html")
    assert "<script>alert(10)</script>" in text and "<this folder>" in text  # the model card, as text
