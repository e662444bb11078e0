"""The dashboard in a real headless browser (Debian's chromium and chromium-driver, driven by selenium): it
draws the tables and the charts while writes go on, the key browser finds a key and pages, the trace view
traces one, and with a token the page asks for it once.  A screenshot is saved as a test artifact
(``build/test-artifacts/dashboard.png``, or under ``$KVSTORE_ARTIFACTS``)."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from servehelp import b64, serving

from kvstore import KV, Config

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("KVSTORE_ARTIFACTS", ROOT / "build" / "test-artifacts"))


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
        if found:
            return found
    raise AssertionError(f"none of {names} is installed: .ci/run installs Debian's chromium and chromium-driver")


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium", "chromium-browser")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,2300",
                "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(_binary("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "db"
    with KV.open(path, Config(memtable_size=1 << 14, background=False)) as kv:
        for batch in range(4):
            for i in range(400):
                kv.set(b"user:%05d" % (batch * 400 + i), b"profile %d" % i * 4)
            kv.flush()
        kv.collection("orders").set(b"o-1", b"first order")
    return path


def _wait(driver: webdriver.Chrome, script: str, timeout: float = 20.0) -> object:
    """Wait until ``script`` (JavaScript returning a value) is truthy; return its value."""
    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script))


def _painted(driver: webdriver.Chrome, canvas_id: str) -> int:
    """How many pixels of a canvas something was drawn on."""
    return int(driver.execute_script(
        "const c = document.getElementById(arguments[0]); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
        "for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n;", canvas_id))


def test_the_dashboard_shows_tables_charts_keys_and_a_trace(browser: webdriver.Chrome, db: Path) -> None:
    with serving(db, "--writable") as server:
        stop = threading.Event()

        def write() -> None:  # commits and gets while the page watches: the charts move
            n = 0
            while not stop.is_set():
                server.json("POST", "/api/put", {"key": b64(b"live:%06d" % n), "value": b64(b"x" * 200)})
                server.json("GET", f"/api/get?key={b64(b'user:%05d' % (n % 1600))}")
                n += 1

        writer = threading.Thread(target=write)
        writer.start()
        try:
            browser.get(server.url)
            _wait(browser, "return document.getElementById('status').textContent === 'live'")
            # one snapshot of the drawn rows, read in the page: it redraws them every second
            rows = browser.execute_script(
                "return [...document.querySelectorAll('#tables .table-row')].map((r) => ({"
                "name: r.querySelector('.name').textContent, text: r.textContent,"
                "width: parseFloat(r.querySelector('.bar > span').style.width)}))")
            assert len(rows) >= 2, "the tables are drawn"
            names = [r["name"] for r in rows]
            assert names == sorted(names, reverse=True), "newest first"
            widths = [r["width"] for r in rows]
            assert max(widths) == 100.0 and all(w > 0 for w in widths), "drawn to scale"
            texts = [r["text"] for r in rows]
            assert any("user:" in t for t in texts) and any("[orders] o-1" in t for t in texts), texts
            _wait(browser, "return Number(document.getElementById('f-commits').textContent.replace('k', '')) > 0")
            _wait(browser, "return document.getElementById('f-tables').textContent !== '\\u2013'")
            for canvas in ("chart-ops", "chart-latency", "chart-wamp"):
                assert _painted(browser, canvas) > 500, canvas

            prefix = browser.find_element(By.ID, "browse-prefix")
            prefix.clear()
            prefix.send_keys("user:0012")
            browser.find_element(By.ID, "browse-go").click()
            _wait(browser, "return document.querySelectorAll('#browse-results tr').length === 10")
            first = browser.find_element(By.CSS_SELECTOR, "#browse-results tr td").text
            assert first == "user:00120"
            prefix.clear()
            prefix.send_keys("user:")
            browser.find_element(By.ID, "browse-go").click()
            _wait(browser, "return document.getElementById('browse-results').textContent.includes('user:00000')")
            browser.find_element(By.ID, "browse-next").click()
            _wait(browser, "return document.getElementById('browse-note').textContent.startsWith('page 2')")
            assert browser.find_element(By.CSS_SELECTOR, "#browse-results tr td").text == "user:00025"

            browser.find_element(By.ID, "trace-key").send_keys("user:00005")
            browser.find_element(By.ID, "trace-go").click()
            _wait(browser, "return document.getElementById('trace-result').textContent.includes('answer: value')")
            traced = browser.find_element(By.ID, "trace-result").text
            assert "bloom positive" in traced and "profile 5" in traced

            tables = len(browser.find_elements(By.CSS_SELECTOR, "#tables .table-row"))
            browser.find_element(By.ID, "do-flush").click()  # a flush, then a merge, as they happen
            _wait(browser, "return document.getElementById('events').textContent.includes('flush #1')")
            browser.find_element(By.ID, "do-compact").click()
            _wait(browser, "return document.getElementById('events').textContent.includes('merge #')")
            _wait(browser, "return document.querySelectorAll('#tables .table-row').length === 1")
            assert tables > 1
            browser.execute_script("window.scrollTo(0, 0)")
            WebDriverWait(browser, 20).until(lambda d: _painted(d, "chart-latency") > 4000)  # a few intervals
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "dashboard.png"
            assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 20_000
        finally:
            stop.set()
            writer.join()


def test_with_a_token_the_page_asks_once_and_then_reads(browser: webdriver.Chrome, db: Path) -> None:
    with serving(db, "--token", "letmein") as server:
        browser.get(server.url)
        alert = WebDriverWait(browser, 20).until(lambda d: d.switch_to.alert)
        alert.send_keys("letmein")
        alert.accept()
        _wait(browser, "return document.getElementById('status').textContent === 'live'")
        assert browser.find_elements(By.CSS_SELECTOR, "#tables .table-row")
        _wait(browser, "return document.getElementById('browse-collection').textContent.includes('orders')")
