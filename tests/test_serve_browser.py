"""The prediction page in a real browser: headless Chromium uploads a photo and sees the predicted class."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import tlearn
from chromium import CHROMIUM, FLAGS, MARKS

pytestmark = MARKS
sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("fastapi")

from test_serve import running_server  # noqa: E402
from tlearn.serve.app import create_app  # noqa: E402


def screenshot_dir(tmp_path: Path) -> Path:
    """Where screenshots go: $TLEARN_SCREENSHOTS if set (to look at them), else the test's temporary folder."""
    folder = Path(os.environ.get("TLEARN_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def percent(p: float) -> str:
    """A probability as the page writes it: one decimal, none at the ends (100%, not 100.0%)."""
    v = p * 100
    return f"{v:.0f}%" if v >= 99.95 or v < 0.05 else f"{v:.1f}%"


def test_page_uploads_a_photo_and_shows_the_prediction(tiny_bundle: Path, shapes_master: Path, tmp_path: Path) -> None:
    predictor = tlearn.load(tiny_bundle)
    photo = shapes_master / "yellow_star" / "yellow_star_003.jpg"
    (top,) = predictor.predict_many([photo], top_k=3).items
    shots = screenshot_dir(tmp_path)
    with running_server(create_app(predictor, top_k=3)) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            outside: list[str] = []
            page.on(
                "request",
                lambda r: outside.append(r.url) if r.url.startswith("http") and not r.url.startswith(url) else None,
            )
            page.goto(url)
            expect = sync_api.expect
            expect(page.locator("#title")).to_have_text("bundle")
            expect(page.locator("#subtitle")).to_contain_text("test_efficientnet · 4 classes")
            expect(page.locator("#classes .chip")).to_have_count(4)
            page.screenshot(path=str(shots / "serve-empty.png"))

            page.set_input_files("#file", str(photo))
            best = page.locator("#results li.top")
            expect(best.locator(".name")).to_have_text(top.top[0].label)
            expect(best.locator(".pct")).to_have_text(percent(top.top[0].probability))
            expect(page.locator("#results li")).to_have_count(3)
            expect(page.locator("#status")).to_contain_text("yellow_star_003.jpg")
            assert page.locator("#preview").evaluate("img => img.complete && img.naturalWidth > 0")
            page.wait_for_timeout(400)  # let the bars finish growing
            page.screenshot(path=str(shots / "serve-desktop.png"), full_page=True)

            page.set_input_files("#file", files=[{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"hi"}])
            expect(page.locator("#error")).to_contain_text("notes.jpg: not an image")
            expect(page.locator("#results li")).to_have_count(0)
            page.screenshot(path=str(shots / "serve-error.png"))

            phone = browser.new_page(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
            phone.goto(url)
            expect(phone.locator("#camera")).to_be_visible()  # a touch screen gets the camera button
            phone.set_input_files("#shoot", str(photo))
            expect(phone.locator("#results li.top .name")).to_have_text(top.top[0].label)
            phone.wait_for_timeout(400)
            phone.screenshot(path=str(shots / "serve-phone.png"), full_page=True)
            assert errors == [] and outside == []
        finally:
            browser.close()


def test_docs_page_renders_offline(tiny_bundle: Path, tmp_path: Path) -> None:
    """Swagger UI at /docs from the server's own assets: it lists the endpoints and asks nothing of a CDN."""
    pytest.importorskip("fastapi_offline")
    with running_server(create_app(tlearn.load(tiny_bundle))) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            outside: list[str] = []
            page.on("request", lambda r: None if r.url.startswith(url) else outside.append(r.url))
            page.goto(url + "docs")
            expect = sync_api.expect
            expect(page.locator(".swagger-ui .info .title")).to_contain_text("tlearn: bundle")
            for path in ("/predict", "/predict/batch", "/model", "/health"):
                expect(page.locator(f'.opblock-summary-path[data-path="{path}"]')).to_have_count(1)
            page.screenshot(path=str(screenshot_dir(tmp_path) / "serve-docs.png"), full_page=True)
            assert errors == [] and outside == []
        finally:
            browser.close()


def test_page_toggle_overlays_the_heatmap_on_the_uploaded_image(
    tiny_bundle: Path, shapes_master: Path, tmp_path: Path
) -> None:
    predictor = tlearn.load(tiny_bundle)
    photo = shapes_master / "green_square" / "green_square_005.jpg"
    h, w = predictor.preprocessing.input_size
    with running_server(create_app(predictor, top_k=3)) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            asked: list[str] = []
            page.on("request", lambda r: asked.append(r.url) if "predict" in r.url else None)
            page.goto(url)
            expect = sync_api.expect
            expect(page.locator("#explain-toggle")).to_be_visible()
            page.set_input_files("#file", str(photo))
            expect(page.locator("#results li")).to_have_count(3)
            assert asked == [url + "predict"]  # no heatmap unless asked
            assert page.locator("#preview").evaluate("img => img.src.startsWith('blob:')")
            page.check("#explain")  # turned on after the prediction: asks again, with the map
            expect(page.locator("#explain-note")).to_contain_text("Red: where the model saw")
            assert asked[-1] == url + "predict?explain=true"
            preview = page.locator("#preview")
            expect(preview).to_have_attribute("alt", re.compile("^Heatmap: where the model saw "))
            assert preview.evaluate("img => img.src.startsWith('data:image/png;base64,')")
            page.wait_for_function("() => document.getElementById('preview').naturalWidth > 0")
            assert preview.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [w, h]
            page.screenshot(path=str(screenshot_dir(tmp_path) / "serve-heatmap.png"), full_page=True)
            page.uncheck("#explain")  # back to the photo, without asking the server
            n = len(asked)
            assert preview.evaluate("img => img.src.startsWith('blob:')")
            expect(page.locator("#explain-note")).to_be_hidden()
            page.check("#explain")  # the map it has already
            assert len(asked) == n and preview.evaluate("img => img.src.startsWith('data:image/png')")
            assert errors == []
        finally:
            browser.close()
