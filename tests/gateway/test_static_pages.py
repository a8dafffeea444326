"""The pages ship in the package and fetch nothing from elsewhere (issue 14: no CDN)."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.routes.web import PAGE_HEADERS, STATIC_DIR

REMOTE = re.compile(
    r"""(https?:)?//[a-z0-9.-]+\.[a-z]{2,}|@import|url\(\s*['"]?(https?:|//)""", re.I
)


def test_static_files_reference_nothing_remote() -> None:
    files = sorted(STATIC_DIR.iterdir())
    assert {f.suffix for f in files} == {".html", ".js", ".css"}
    for f in files:
        text = f.read_text()
        found = [m.group(0) for m in REMOTE.finditer(text)]
        assert found == [], (f.name, found)
        for ref in re.findall(r"""(?:src|href)=["']([^"']+)["']""", text):
            assert ref.startswith("/static/"), (f.name, ref)  # same origin, shipped here


def test_pages_forbid_other_origins() -> None:
    csp = PAGE_HEADERS["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert Path(STATIC_DIR, "portal.html").exists()
    assert Path(STATIC_DIR, "dashboard.html").exists()
