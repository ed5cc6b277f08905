"""``fusionaudio demo`` in a real headless Chromium: upload, submit, read the answer; examples; errors.

Needs Debian's ``chromium`` on PATH (``.ci/run`` installs it as root) and the ``playwright`` package;
without either this module is skipped with one line naming the install. Set
``FUSIONAUDIO_DEMO_SCREENSHOT=imgs/demo.png`` to refresh the README's screenshot.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("chromium is not installed: apt-get install chromium (as root; .ci/run does it)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

from fusionaudio.serve.process import ServerProcess  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CLIP = REPO / "data" / "example" / "demo_clip.wav"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory):
    log = tmp_path_factory.mktemp("demo_server") / "requests.jsonl"
    with ServerProcess("demo", ["--log_file", str(log), "--threads", "1"], ready_path="/") as url:
        yield url, log


@pytest.fixture(scope="module")
def page():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        yield page
        browser.close()


def _wait_value(page, selector: str, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = page.locator(selector).input_value()
        if value.strip():
            return value
        time.sleep(0.3)
    raise AssertionError(f"{selector} stayed empty for {timeout:.0f} s")


def test_browser_upload_submit_and_read_answer(page, demo_url, tmp_path):
    url, log = demo_url
    page.goto(url, wait_until="networkidle")
    page.locator("#audio input[type=file]").set_input_files(str(CLIP))
    page.locator("#question textarea").fill("Describe the audio.")
    page.locator("#submit").click()
    answer = _wait_value(page, "#answer textarea")
    assert _wait_value(page, "#info textarea").startswith("5.30 s, 16000 Hz, 1 channel(s)")
    page.screenshot(path=os.environ.get("FUSIONAUDIO_DEMO_SCREENSHOT", str(tmp_path / "demo.png")), full_page=True)
    record = json.loads(log.read_text().splitlines()[-1])
    assert record["question"] == "Describe the audio." and record["answer"] == answer


def test_browser_example_is_one_click_away(page, demo_url):
    url, _ = demo_url
    page.goto(url, wait_until="networkidle")
    page.get_by_text("How many sounds are there?").first.click()
    page.wait_for_function("document.querySelector('#question textarea').value === 'How many sounds are there?'")
    page.locator("#submit").click()
    assert _wait_value(page, "#answer textarea").strip()


def test_browser_shows_a_readable_error_for_bad_audio(page, demo_url, tmp_path):
    url, _ = demo_url
    bad = tmp_path / "broken.wav"
    sf.write(bad, np.zeros(50, dtype=np.float32), 16000)  # a valid file, too short for one 25 ms frame
    page.goto(url, wait_until="networkidle")
    page.locator("#audio input[type=file]").set_input_files(str(bad))
    page.locator("#submit").click()
    page.wait_for_function("document.querySelector('#error').innerText.includes('Error')", timeout=120_000)
    assert "too short" in page.locator("#error").inner_text()
    assert page.locator("#answer textarea").input_value() == ""
