"""The web page in headless Chromium (Debian's package, driven by Playwright's Python package):
upload a real image, wait for the detections, and check the screenshot against the JSON."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("Chromium is not installed (Debian: apt-get install chromium chromium-driver; .ci/run does it)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed")

# Headless as root, on a closed network: no sandbox, no GPU, and none of Chromium's own background
# connections (they are refused here and slow every start).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def edge_points(box: list[float], scale: tuple[float, float], shape: tuple[int, int], n: int = 16):
    """Screenshot pixels on the four sides of ``box`` (image pixels), away from the corners."""
    x1, y1, x2, y2 = (v * s for v, s in zip(box, scale * 2))
    height, width = shape
    points = []
    for t in np.linspace(0.15, 0.85, n):
        x, y = x1 + t * (x2 - x1), y1 + t * (y2 - y1)
        points += [(x, y1), (x, y2), (x1, y), (x2, y)]
    return [(min(max(int(round(y)), 0), height - 1), min(max(int(round(x)), 0), width - 1)) for x, y in points]


def near_colour(pixels: np.ndarray, row: int, col: int, colour: np.ndarray, tol: int = 40) -> bool:
    """``colour`` within ``tol`` per channel somewhere in the 3x3 neighbourhood (line edges blend)."""
    patch = pixels[max(row - 1, 0):row + 2, max(col - 1, 0):col + 2].reshape(-1, 3)
    return bool((np.abs(patch - colour).max(axis=1) <= tol).any())


def test_page_shows_the_detections_where_the_json_says(server, coco_images, tmp_path):
    path = next(p for p in coco_images if Image.open(p).size == (640, 480))
    expected = httpx.post(server.url + "/v1/predict", params={"score_threshold": 0},
                          files={"image": (path.name, path.read_bytes())}, timeout=120).json()
    scores = sorted((d["score"] for d in expected["detections"]), reverse=True)
    assert len(scores) >= 4
    # a slider position (a multiple of its 0.01 step) that hides part of the detections
    threshold = next(t for t in (math.ceil(s * 100) / 100 for s in scores[len(scores) // 2:]) if 0 < sum(s >= t for s in scores)
                     < len(scores))
    shown = [d for d in expected["detections"] if d["score"] >= threshold]

    predict_calls: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda r: predict_calls.append(r.url) if "/v1/predict" in r.url else None)
            page.goto(server.url + "/")
            page.wait_for_selector("#model-name:text('retinanet_spinenet49_tiny')", timeout=30_000)
            assert page.locator("#classes .chip").all_inner_texts() == ["circle", "square", "triangle"]
            page.set_input_files("#file", str(path))
            page.wait_for_selector("#detections li", timeout=120_000)
            assert page.locator("#detections li").count() == sum(s >= 0.3 for s in scores)  # the slider's start
            page.eval_on_selector("#threshold", "(el, t) => { el.value = t; el.dispatchEvent(new Event('input')); }",
                                  str(threshold))
            items = page.locator("#detections li")
            assert items.count() == len(shown)
            listed = [items.nth(i) for i in range(items.count())]
            drawn = [{"box": [float(v) for v in item.get_attribute("data-box").split(",")],
                      "colour": [int(v) for v in item.get_attribute("data-color").split(",")],
                      "score": float(item.get_attribute("data-score"))} for item in listed]
            assert "circle" in listed[0].inner_text()
            canvas_png = tmp_path / "canvas.png"
            page.locator("#canvas").screenshot(path=str(canvas_png))
            page.screenshot(path=str(tmp_path / "page.png"))
        finally:
            browser.close()
    assert len(predict_calls) == 1  # the slider filtered in the page, without a new request
    assert [d["score"] for d in drawn] == pytest.approx([d["score"] for d in shown])
    for got, want in zip(drawn, shown):
        assert got["box"] == pytest.approx(want["box"], abs=1e-3)

    shot = np.asarray(Image.open(canvas_png).convert("RGB")).astype(int)
    height, width = shot.shape[:2]
    scale = (width / 640, height / 480)
    assert abs(scale[0] - scale[1]) < 0.01 and width >= 320
    original = np.asarray(Image.open(path).convert("RGB").resize((width, height), Image.BILINEAR)).astype(int)
    assert shot.std() > 20  # not blank

    # away from every box and its label, the screenshot is the uploaded photo
    away = np.ones((height, width), dtype=bool)
    for det in drawn:
        x1, y1, x2, y2 = (int(v * s) for v, s in zip(det["box"], scale * 2))
        away[max(y1 - int(40 * scale[1]), 0):y2 + 6, max(x1 - 6, 0):x2 + 6] = False
    assert away.mean() > 0.3
    assert np.abs(shot - original)[away].mean() < 12

    for det in drawn:
        colour = np.array(det["colour"])
        points = edge_points(det["box"], scale, (height, width))
        on_screen = np.mean([near_colour(shot, r, c, colour) for r, c in points])
        in_photo = np.mean([near_colour(original, r, c, colour) for r, c in points])
        assert on_screen > 0.75 and in_photo < 0.5, (det, on_screen, in_photo)
