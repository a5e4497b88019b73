"""End to end in a real browser: `medvit viewer` on a free localhost port, driven by headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
                       reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian packages chromium, chromium-driver; "
                              "`make sysdeps` installs them)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: what Streamlit prints once its server listens (the readiness event; no polling)
_READY = "You can now view your Streamlit app"


def _follow(proc: subprocess.Popen, log: Path, ready: threading.Event) -> None:
    """Copy the viewer's output to ``log``; set ``ready`` when the server says it listens, or when it exits."""
    with open(log, "w") as fh:
        for line in proc.stdout:  # type: ignore[union-attr]
            fh.write(line)
            fh.flush()
            if _READY in line:
                ready.set()
    ready.set()


@pytest.fixture
def server(studies, tiny_model, tmp_path):
    cmd = [sys.executable, "-m", "medvit.cli.main", "viewer", "--data", str(studies), "--model", str(tiny_model),
           "--results", str(tmp_path / "results"), "--port", str(_free_port())]
    yield from _serve(cmd, tmp_path, tmp_path / "viewer.log")


def _serve(cmd: list[str], cwd: Path, log: Path):
    """Start ``medvit viewer`` (``cmd``) in ``cwd``; once Streamlit says it listens and answers its health probe,
    yield the URL with the access token `medvit viewer` printed; stop it (whole process group) afterwards."""
    port = int(cmd[cmd.index("--port") + 1])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                            start_new_session=True)
    ready = threading.Event()
    follower = threading.Thread(target=_follow, args=(proc, log, ready), daemon=True)
    follower.start()
    url = f"http://localhost:{port}"
    try:
        if not ready.wait(timeout=60):
            raise TimeoutError(f"viewer did not report listening on {url} within 60 s: {log.read_text()[-2000:]}")
        if proc.poll() is not None:
            raise RuntimeError(f"viewer exited with code {proc.returncode}: {log.read_text()[-2000:]}")
        with urllib.request.urlopen(url + "/_stcore/health", timeout=10) as r:
            assert r.read().strip() == b"ok"
        token = re.search(r"\?token=([A-Za-z0-9_-]+)", log.read_text()).group(1)  # printed by `medvit viewer`
        yield f"{url}/?token={token}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        follower.join(timeout=10)


@pytest.fixture
def demo_server(tmp_path):
    """`make demo` then `make viewer` as a new user runs them: `medvit demo` in a fresh folder, then
    `medvit viewer` with no options in that folder."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    done = subprocess.run([sys.executable, "-m", "medvit.cli.main", "demo", "--out", "demo_out"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 3), done.stdout + done.stderr
    assert (tmp_path / "demo_out" / "inbox").is_dir()
    cmd = [sys.executable, "-m", "medvit.cli.main", "viewer", "--port", str(_free_port())]
    yield from _serve(cmd, tmp_path, tmp_path / "viewer.log")


def _chrome(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
              f"--user-data-dir={tmp_path / 'chromium-profile-demo'}", "--window-size=1600,1100"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def test_after_make_demo_first_page_has_model_findings_and_banner(demo_server, tmp_path):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from medvit.demo import current_demo_model

    d = _chrome(tmp_path)
    try:
        wait = WebDriverWait(d, 90, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
        d.get(demo_server)
        main = '[data-testid="stMain"]'
        wait.until(lambda d: "RESEARCH USE ONLY" in d.find_element(By.CSS_SELECTOR, main).text)
        model_dir = current_demo_model()
        assert model_dir is not None
        import json

        name = json.loads((model_dir / "config.json").read_text()).get("contract", {}).get("name") or ""
        wait.until(lambda d: "Model" in d.find_element(By.CSS_SELECTOR, main).text)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'{main} [data-testid="stDataFrame"]'))
        text = d.find_element(By.CSS_SELECTOR, main).text
        assert "No model loaded" not in text and "operating thresholds" in text
        assert not name or name in text
        assert not d.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    finally:
        d.save_screenshot(str(tmp_path / "demo_first_page.png"))
        d.quit()


@pytest.fixture
def driver(tmp_path, server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
              f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1600,1100"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield d
    finally:
        try:  # leave evidence of the last state for a failing run
            d.save_screenshot(str(tmp_path / "last_state.png"))
            (tmp_path / "last_state.txt").write_text(d.find_element("tag name", "body").text)
        except Exception:
            pass
        d.quit()


def _button(d, text: str):
    return d.find_element("xpath", f"//button[.//p[contains(normalize-space(.), '{text}')]]")


def _clicked(element) -> bool:
    """Click inside a wait: Streamlit reruns replace elements, so a stale or covered one is retried."""
    element.click()
    return True


def _open_series(d) -> str:
    """Label of the highlighted (open) series button in the sidebar."""
    return " ".join(b.text for b in d.find_elements("css selector", '[data-testid="stSidebar"] button[kind="primary"]'))


def _main_caption(d) -> str:
    caps = d.find_elements("css selector", '[data-testid="stMain"] [data-testid="stCaptionContainer"]')
    return " | ".join(c.text for c in caps)


def test_open_study_run_model_show_heatmap(server, driver, tmp_path):
    from selenium.common.exceptions import (
        ElementClickInterceptedException,
        NoSuchElementException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    # generous timeout and retries: under a loaded CI machine each Streamlit rerun can take seconds
    wait = WebDriverWait(driver, 90, ignored_exceptions=(
        NoSuchElementException, StaleElementReferenceException, ElementClickInterceptedException))
    driver.get(server)
    wait.until(ec.presence_of_element_located((By.XPATH, "//*[contains(text(), 'RESEARCH USE ONLY')]")))
    # open a study: pick the two-series study, then its CHEST PA series from the thumbnail grid
    wait.until(lambda d: _button(d, "CINE"))
    wait.until(lambda d: _clicked(d.find_element(By.CSS_SELECTOR,
                                                 '[data-testid="stSidebar"] [data-testid="stSelectbox"]')))
    wait.until(ec.element_to_be_clickable((By.XPATH, "//*[@role='option'][contains(., '2 series')]"))).click()
    wait.until(lambda d: "CHEST LAT" in _open_series(d))  # the study opened on its first series
    wait.until(lambda d: _clicked(_button(d, "CHEST PA")))
    wait.until(lambda d: "CHEST PA" in _open_series(d))
    wait.until(lambda d: "W 4096 L 2048" in _main_caption(d) and "80×96" in _main_caption(d))
    # run the model
    wait.until(lambda d: _clicked(_button(d, "Run model on this image")))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, '[data-testid="stMain"] [data-testid="stDataFrame"]')))
    wait.until(lambda d: "operating thresholds" in d.find_element(By.CSS_SELECTOR, '[data-testid="stMain"]').text)
    # show the heatmap for the first finding
    wait.until(lambda d: _clicked(d.find_element(
        By.XPATH, "//div[@data-testid='stSelectbox'][.//p[normalize-space(.)='Heatmap for']]")))
    wait.until(ec.element_to_be_clickable((By.XPATH, "(//*[@role='option'][not(contains(., 'Off'))])[1]"))).click()
    wait.until(lambda d: "heatmap" in _main_caption(d))
    img_css = '[data-testid="stMain"] [data-testid="stImage"] img'
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, img_css).get_attribute("alt").startswith(
               "DX view, W 4096 L 2048, heatmap: "))
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, img_css).get_attribute("naturalWidth") not in (None, "0"))
    img = driver.find_element(By.CSS_SELECTOR, img_css)
    assert int(img.get_attribute("naturalWidth")) > 0 and img.is_displayed()
    assert img.get_attribute("alt").startswith("DX view, W 4096 L 2048, heatmap: ")  # names the finding
    assert driver.find_element(By.CSS_SELECTOR, '[data-testid="stMain"] [data-testid="stDataFrame"]').is_displayed()
    assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    assert "CHEST PA" in _open_series(driver)
    out = tmp_path / "viewer_screenshot.png"
    assert driver.save_screenshot(str(out)) and out.stat().st_size > 10_000
    record = os.environ.get("MEDVIT_VIEWER_SCREENSHOT")  # set once to keep a copy for the record
    if record:
        shutil.copyfile(out, Path(record))
