"""Reading in a real browser (headless Chromium): worklist order after a batch run, a distance on an image with
known Imager Pixel Spacing, CT scrolling that keeps its window, a DICOM SEG from `medvit infer` as an overlay.

One viewer serves all four tests (started once on a free port, readiness from Streamlit's own line + health
probe, see tests/viewer/test_browser.py); each test opens its own page.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.viewer.test_browser import CHROMEDRIVER, CHROMIUM, _chrome, _clicked, _free_port, _serve

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                       reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (`make sysdeps`)"),
]

SPACING = 0.2  # Imager Pixel Spacing of tests.infer.helpers.write_dx (mm, at the detector)


@pytest.fixture(scope="module")
def reading_setup(tmp_path_factory):
    """Studies (4 DX patients, one with a prior, one 12-slice CT) + `medvit infer` results of a segmentation model."""
    from pydicom.uid import generate_uid

    from medvit.io.writers import write_ct_series
    from tests.infer.helpers import write_dx
    from tests.reading.helpers import make_seg_model

    root = tmp_path_factory.mktemp("reading")
    data = root / "studies"
    for i in range(4):
        write_dx(data / f"p{i}" / "dx.dcm", generate_uid(), generate_uid(), rows=64, cols=64, seed=10 + i,
                 patient=f"P{i}")
    write_dx(data / "p0" / "prior.dcm", generate_uid(), generate_uid(), rows=64, cols=64, seed=99, patient="P0")
    import pydicom

    for i in range(4):  # descriptions name the patients (identifiers are hidden in the study picker)
        ds = pydicom.dcmread(data / f"p{i}" / "dx.dcm")
        ds.StudyDescription = f"XR CHEST P{i}"
        ds.save_as(data / f"p{i}" / "dx.dcm")
    prior = pydicom.dcmread(data / "p0" / "prior.dcm")
    prior.StudyDate, prior.StudyDescription = "20230102", "XR CHEST P0 PRIOR"  # a year before: P0's prior
    prior.save_as(data / "p0" / "prior.dcm")
    write_ct_series(data / "ct", 12, {"PatientID": "PCT", "StudyDate": "20240105", "StudyTime": "101010",
                                      "AccessionNumber": "CT1", "StudyDescription": "CT CHEST",
                                      "SeriesDescription": "CT AXIAL"}, size=64)
    model = make_seg_model(root / "segmodel")
    results = root / "results"
    done = subprocess.run([sys.executable, "-m", "medvit.cli.main", "infer", "-m", str(model), "-i", str(data),
                           "-o", str(results), "--workers", "0"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return data, results, root


@pytest.fixture(scope="module")
def reading_server(reading_setup):
    data, results, root = reading_setup
    cmd = [sys.executable, "-m", "medvit.cli.main", "viewer", "--data", str(data), "--results", str(results),
           "--port", str(_free_port())]
    yield from _serve(cmd, root, root / "viewer.log")


@pytest.fixture
def d(tmp_path, reading_server):
    drv = _chrome(tmp_path)
    try:
        drv.get(reading_server)
        yield drv
    finally:
        try:
            drv.save_screenshot(str(tmp_path / "last_state.png"))
            (tmp_path / "last_state.txt").write_text(drv.find_element("tag name", "body").text)
        except Exception:
            pass
        drv.quit()


def _wait(d):
    from selenium.common.exceptions import (
        ElementClickInterceptedException,
        NoSuchElementException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(d, 90, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException,
                                                    ElementClickInterceptedException))


def _pick_study(d, wait, text: str) -> None:
    """Choose the sidebar study whose label contains ``text``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    box = '[data-testid="stSidebar"] [data-testid="stSelectbox"]:has(input[aria-label="Study"])'
    wait.until(lambda d: _clicked(d.find_element(By.CSS_SELECTOR, box)))
    wait.until(ec.element_to_be_clickable((By.XPATH, f"//*[@role='option'][contains(., '{text}')]"))).click()


def _tab(d, wait, name: str) -> None:
    wait.until(lambda d: _clicked(d.find_element("xpath", f"//*[@role='tab'][normalize-space(.)='{name}']")))


def _img_alt(d) -> str:
    return d.find_element("css selector", '[data-testid="stMain"] [data-testid="stImage"] img').get_attribute("alt")


def test_worklist_orders_studies_by_finding_probability(d, reading_setup):
    _, results, _ = reading_setup
    wait = _wait(d)
    table_rows = '[data-testid="stMain"] [data-testid="stTable"] tbody tr'
    # 5 DX studies predicted (the CT is outside the model's CR/DX scope), one page
    wait.until(lambda d: len(d.find_elements("css selector", table_rows)) == 5)
    finding = "heart"  # the first finding in the triage box (labels sorted): the default triage
    cells = [[c.text.strip() for c in r.find_elements("css selector", "td")]
             for r in d.find_elements("css selector", table_rows)]
    assert [c[0] for c in cells] == ["1", "2", "3", "4", "5"]  # rank, then the finding's probability
    shown = [c[-1] for c in cells]  # the study UID is the last column
    # expected from predictions.csv alone: per study the highest image probability, p >= threshold first
    best: dict[str, float] = {}
    with open(results / "predictions.csv") as f:
        for row in csv.DictReader(f):
            best[row["study_instance_uid"]] = max(best.get(row["study_instance_uid"], 0.0),
                                                  float(row[f"p_{finding}"]))
    thr = {"lung_right": 0.5, "lung_left": 0.45, "heart": 0.55}[finding]
    expected = sorted(best, key=lambda s: (best[s] < thr, -best[s]))
    assert len(set(best.values())) == len(best)  # distinct probabilities: the order is unambiguous
    assert shown == expected


def test_distance_reads_expected_millimetres(d):
    from selenium.webdriver.common.keys import Keys

    wait = _wait(d)
    _pick_study(d, wait, "P2")
    wait.until(lambda d: "64×64" in _img_alt(d) or "DX view" in _img_alt(d))
    _tab(d, wait, "Measure")
    for name, value in (("start x", 10), ("start y", 20), ("end x", 40), ("end y", 60)):
        box = wait.until(lambda d, n=name: d.find_element("css selector", f'input[aria-label="{n}"]'))
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(str(value), Keys.ENTER)
        wait.until(lambda d, n=name, v=value: d.find_element(
            "css selector", f'input[aria-label="{n}"]').get_attribute("value") in (f"{v}.00", str(v), f"{v}.0"))
    expected = math.hypot(30 * SPACING, 40 * SPACING)  # 10.00 mm at the detector
    main = '[data-testid="stMain"]'
    wait.until(lambda d: f"Distance: {expected:.2f} mm" in d.find_element("css selector", main).text)
    text = d.find_element("css selector", main).text
    assert "ImagerPixelSpacing (detector)" in text and "C.8.11.7" in text


def test_ct_series_scrolls_and_keeps_its_window(d):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec

    wait = _wait(d)
    _pick_study(d, wait, "CT CHEST")
    wait.until(lambda d: _img_alt(d).startswith("CT view, W 400 L 40"))
    wait.until(lambda d: _clicked(d.find_element(By.XPATH, "//div[@data-testid='stSelectbox'][.//p[normalize-space(.)="
                                                          "'Window']]")))
    wait.until(ec.element_to_be_clickable((By.XPATH, "//*[@role='option'][starts-with(normalize-space(.), 'lung')]"))
               ).click()
    wait.until(lambda d: _img_alt(d).startswith("CT view, W 1500 L -600"))
    # scroll with the keyboard on the Image slider (→ = next slice), as a reader does
    slider = '[data-testid="stMain"] input[type="range"][aria-label="Image"]'
    wait.until(lambda d: "Im 1/12" in _img_alt(d))
    for k in range(2, 5):
        d.execute_script("arguments[0].focus()", wait.until(lambda d: d.find_element("css selector", slider)))
        ActionChains(d).send_keys(Keys.ARROW_RIGHT).perform()
        wait.until(lambda d, k=k: f"Im {k}/12" in _img_alt(d))  # the server drew slice k
        assert _img_alt(d).startswith("CT view, W 1500 L -600")  # ... in the window chosen on slice 1


def test_seg_from_infer_is_overlaid(d):
    wait = _wait(d)
    _pick_study(d, wait, "P1")
    _tab(d, wait, "Segmentation")
    wait.until(lambda d: "segmentation: lung_right, lung_left, heart" in _img_alt(d))
    wait.until(lambda d: _clicked(d.find_element("xpath", "//label[.//p[starts-with(normalize-space(.), 'heart')]]")))
    wait.until(lambda d: "segmentation: lung_right, lung_left" in _img_alt(d) and "heart" not in _img_alt(d))
    assert not d.find_elements("css selector", '[data-testid="stException"]')
