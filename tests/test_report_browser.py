"""report.html in a real browser: headless Chromium renders every section and every picture, offline."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from chromium import CHROMIUM, FLAGS, MARKS
from test_report import make_run
from tlearn.report.page import SECTIONS, write_report

pytestmark = MARKS


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(make_run(tmp_path_factory.mktemp("browser")))


def test_chromium_renders_every_section(report: Path, tmp_path: Path) -> None:
    """Chromium's own command line: the DOM after rendering holds each section; a screenshot is drawn."""
    dom = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    for key, title in SECTIONS.items():
        assert f'<section id="{key}">' in dom and f"<h2>{title}</h2>" in dom, key
    shot = tmp_path / "report.png"
    subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
         "--window-size=1280,2000", report.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    assert shot.stat().st_size > 10_000


def test_sections_are_visible_and_pictures_load_without_network(report: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")
    requests: list[str] = []
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(report.as_uri())
            for key, title in SECTIONS.items():
                heading = page.locator(f"section#{key} > h2")
                assert heading.inner_text() == title
                assert heading.is_visible()
            sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth])")
            # dataset, curves, confusion (2), mistakes and "Where it looks" (attention): one picture each
            assert len(sizes) == 6 and all(done and width > 200 for done, width in sizes)
            page.click("nav >> text=Mistakes")
            assert page.evaluate("location.hash") == "#mistakes"
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        finally:
            browser.close()
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    assert errors == []
    assert (tmp_path / "page.png").stat().st_size > 10_000
