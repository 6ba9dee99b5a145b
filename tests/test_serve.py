"""digitloc-serve: every route, every bad input, a bounded load test and a real-browser test."""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from digitloc.runtime.detector import Detector  # noqa: E402
from digitloc.serve.app import create_app  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _png(h: int = 40, w: int = 70) -> bytes:
    img = np.full((h, w, 3), 25, np.uint8)
    cv2.rectangle(img, (30, 6), (38, 34), (250, 250, 250), -1)
    return cv2.imencode(".png", img)[1].tobytes()


@pytest.fixture(scope="module")
def client(tiny_onnx: Path) -> TestClient:
    app = create_app(Detector(tiny_onnx, provider="cpu"), max_upload_bytes=50_000, max_batch=4)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_routes(client: TestClient, tiny_onnx: Path) -> None:
    health = client.get("/healthz").json()
    assert health == {"status": "ok", "model": tiny_onnx.name, "provider": "CPUExecutionProvider"}
    meta = client.get("/metadata").json()
    assert meta["digitloc.input_size"] == "32,32" and meta["digitloc.class_names"] == list("0123456789")
    page = client.get("/")
    assert page.status_code == 200 and 'type="file"' in page.text and "getUserMedia" in page.text
    raw = client.post("/predict", content=_png(), headers={"content-type": "image/png"})
    assert raw.status_code == 200
    body = raw.json()
    assert set(body) >= {"digit", "confidence", "bbox", "probs", "latency_ms", "width", "height"}
    assert (body["width"], body["height"]) == (70, 40) and 0 <= body["bbox"][0] <= body["bbox"][2] <= 70
    expected = Detector(tiny_onnx, provider="cpu").predict(cv2.imdecode(np.frombuffer(_png(), np.uint8), 1))
    assert body["digit"] == expected.digit
    multi = client.post("/predict", files={"file": ("a.png", _png(), "image/png")})
    assert multi.status_code == 200 and multi.json()["digit"] == body["digit"]
    batch = client.post("/predict/batch", files=[("file", ("a.png", _png(), "image/png")),
                                                  ("file", ("b.png", _png(50, 90), "image/png"))])
    assert batch.status_code == 200
    results = batch.json()["results"]
    assert [r["name"] for r in results] == ["a.png", "b.png"] and results[1]["width"] == 90


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "message"), [
    ("post", "/predict", {"content": b"", "headers": {"content-type": "image/png"}}, 400, "empty upload"),
    ("post", "/predict", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "not an image"),
    ("post", "/predict", {"content": b"definitely not a png", "headers": {"content-type": "image/png"}}, 422,
     "not an image, or a corrupt one"),
    ("post", "/predict", {"content": _png()[:50], "headers": {"content-type": "image/png"}}, 422, "corrupt"),
    ("post", "/predict", {"content": b"\0" * 60_000, "headers": {"content-type": "image/png"}}, 413, "limit"),
    ("post", "/predict/batch", {"files": [("f", (f"{i}.png", _png(), "image/png")) for i in range(5)]}, 400,
     "multipart"),
    ("post", "/predict/batch", {"files": {"note": (None, "no files here")}}, 400, "no file"),
    ("get", "/predict", {}, 405, "Method Not Allowed"),
    ("delete", "/healthz", {}, 405, "Method Not Allowed"),
    ("get", "/nope", {}, 404, "Not Found"),
])
def test_bad_requests_get_json_4xx_and_the_server_goes_on(client: TestClient, method: str, path: str, kwargs: dict,
                                                          status: int, message: str) -> None:
    resp = getattr(client, method)(path, **kwargs)
    assert resp.status_code == status, resp.text
    assert message in resp.json()["error"]
    assert client.get("/healthz").status_code == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_onnx: Path) -> str:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "digitloc.serve", "--model", str(tiny_onnx), "--provider", "cpu",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(f"server did not start: {proc.stdout.read().decode() if proc.stdout else ''}")
    yield url
    proc.terminate()
    proc.wait(10)


def test_load_from_a_second_process(server: str) -> None:
    """200 requests from 8 client threads against the server process, bounded to 60 s."""
    body = _png()
    latencies: list[float] = []
    failures: list[str] = []
    deadline = time.time() + 60

    def one(_: int) -> None:
        if time.time() > deadline:
            failures.append("deadline passed")
            return
        start = time.perf_counter()
        resp = httpx.post(f"{server}/predict", content=body, headers={"content-type": "image/png"}, timeout=10)
        latencies.append((time.perf_counter() - start) * 1000)
        if resp.status_code != 200 or "digit" not in resp.json():
            failures.append(f"{resp.status_code}: {resp.text[:80]}")

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(200)))
    seconds = time.perf_counter() - start
    assert failures == [] and len(latencies) == 200
    print(f"\nload test: 200 requests, {200 / seconds:.0f} requests/s, p99 {np.percentile(latencies, 99):.1f} ms")
    assert httpx.get(f"{server}/healthz").status_code == 200


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None or shutil.which("chromedriver") is None,
                    reason="Debian's chromium and chromium-driver are not installed")
def test_a_person_uploads_a_photo_in_a_real_browser(server: str, tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "photo.png"
    photo.write_bytes(_png(60, 100))
    expected = httpx.post(f"{server}/predict", content=photo.read_bytes(), headers={"content-type": "image/png"}).json()
    options = webdriver.ChromeOptions()
    options.binary_location = _chromium()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(f"{server}/")
        driver.find_element(By.ID, "file").send_keys(str(photo))
        digit = WebDriverWait(driver, 20).until(expected_conditions.presence_of_element_located((By.ID, "digit")))
        assert digit.text == str(expected["digit"])
        shots = Path(os.environ.get("DIGITLOC_ARTIFACTS", REPO / "build" / "test-artifacts"))
        shots.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(shots / "serve-page.png"))
        canvas_width = driver.execute_script("return document.getElementById('view').width")
        assert canvas_width >= 100
    finally:
        driver.quit()
