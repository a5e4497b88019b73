"""Reading speed: worklist first paint with 1,000 studies of results; slice-scroll latency on a 300-slice CT series.

Builds in a temporary folder (i) a `medvit infer`-style results folder whose ``predictions.jsonl`` holds
``--studies`` studies (14 findings each, random probabilities, some OOD flags) and (ii) a ``--slices``-slice
512 x 512 CT series (:func:`medvit.io.writers.write_ct_series`), starts ``medvit viewer`` on a free localhost
port and drives headless Chromium:

* worklist first paint: from ``driver.get`` to the worklist's first page (25 rows) in the page, cold (first load
  of the server) and warm (results cached by Streamlit), plus the library's share (load, status, sort, page);
* slice scroll: the CT series opened with the lung window, then → pressed on the Image slider ``--steps`` times;
  each step timed until the view image of the next slice ("Im k/N" in its alt text) has loaded, plus the
  server-side steps per slice in-process (decode, render with the lung window, downsample, PNG encode).

    nice -n 10 .venv/bin/python benchmarks/reading_benchmark.py [--studies 1000] [--slices 300] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis", "Hernia",
          "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax"]


def write_results(root: Path, n: int, seed: int = 0) -> Path:
    """A results folder whose predictions.jsonl holds ``n`` one-image studies."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    thr = dict.fromkeys(LABELS, 0.5)
    with open(root / "predictions.jsonl", "w") as f:
        for i in range(n):
            p = rng.beta(0.5, 3.0, len(LABELS))
            f.write(json.dumps({"file": f"s{i:05d}/img.dcm", "study_instance_uid": f"2.25.{10_000 + i}",
                                "study_date": f"2024{1 + i % 12:02d}{1 + i % 28:02d}", "modality": "DX",
                                "patient_id": f"P{i}", "accession_number": f"A{i}",
                                "probabilities": {k: round(float(v), 6) for k, v in zip(LABELS, p, strict=True)},
                                "thresholds": thr, "positive_findings": [k for k, v in zip(LABELS, p, strict=True)
                                                                         if v >= 0.5],
                                "ood_flag": bool(rng.random() < 0.05), "model": {"name": "bench", "version": "1"}})
                    + "\n")
    return root


def library_worklist(results: Path, repeats: int = 5) -> float:
    """Median seconds of what the page computes for the worklist (load, status, sort, first page rows)."""
    from medvit.infer.worklist import load_worklist, reading_status, select, with_status

    t = []
    for _ in range(repeats):
        a = time.perf_counter()
        rows = with_status(load_worklist(results), reading_status(results))
        page = [r.to_row() for r in select(rows, LABELS[0])[:25]]
        t.append(time.perf_counter() - a)
        assert len(page) == 25
    return statistics.median(t)


def server_slice_steps(files: list[Path]) -> dict[str, float]:
    """Median seconds per slice of the viewer's server-side steps (cold decode of each file)."""
    from apps.viewer import view
    from medvit.io import read_image, render

    t: dict[str, list[float]] = {"decode": [], "render_lung": [], "compose": [], "png_encode": []}
    for f in files:
        a = time.perf_counter()
        img = read_image(f)
        b = time.perf_counter()
        disp = render(img, preset="lung")
        c = time.perf_counter()
        shown = view.compose(disp, max_side=1024)
        d = time.perf_counter()
        view.to_png(shown)
        e = time.perf_counter()
        for k, v in zip(t, (b - a, c - b, d - c, e - d), strict=True):
            t[k].append(v)
    return {k: statistics.median(v) for k, v in t.items()}


def apptest_scroll_cpu(ct: Path, steps: int = 20) -> dict[str, float]:
    """CPU seconds of the viewer's script rerun per slider step (Streamlit AppTest, no browser), lung window:
    what one scroll step costs the server, independent of how loaded the machine is."""
    from streamlit.testing.v1 import AppTest

    os.environ["MEDVIT_VIEWER_DATA"] = str(ct)
    os.environ["MEDVIT_VIEWER_RESULTS"] = str(ct.parent / "no-results")
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "apps" / "viewer" / "app.py"),
                           default_timeout=300)
    at.run()
    lung = next(o for o in at.selectbox(key="disp_preset").options if o.startswith("lung"))
    at.selectbox(key="disp_preset").set_value(lung).run()
    cpu, wall = [], []
    for k in range(2, 2 + steps):
        c0, w0 = time.process_time(), time.perf_counter()
        at.slider(key="nav_file").set_value(k).run()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
        if at.exception:
            raise RuntimeError(f"viewer raised: {at.exception}")
    return {"cpu_median": statistics.median(cpu), "cpu_max": max(cpu), "wall_median": statistics.median(wall)}


def _chrome(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
              f"--user-data-dir={profile}", "--window-size=1600,1100"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def _serve(data: Path, results: Path, tmp: Path, name: str):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp / f"{name}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "medvit.cli.main", "viewer", "--data", str(data), "--results",
                             str(results), "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
                            start_new_session=True)
    import re
    import urllib.request

    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    token = None
    for _ in range(100):
        m = re.search(r"\?token=([A-Za-z0-9_-]+)", (tmp / f"{name}.log").read_text())
        if m:
            token = m.group(1)
            break
        time.sleep(0.1)
    return proc, f"http://localhost:{port}/?token={token}"


def worklist_paint(url: str, profile: Path, loads: int = 3) -> list[float]:
    """Seconds from driver.get to 25 worklist rows in the page, for ``loads`` page loads (first = cold)."""
    from selenium.webdriver.support.ui import WebDriverWait

    d = _chrome(profile)
    rows = '[data-testid="stMain"] [data-testid="stTable"] tbody tr'
    out = []
    try:
        for _ in range(loads):
            t0 = time.perf_counter()
            d.get(url)
            WebDriverWait(d, 300, poll_frequency=0.02).until(
                lambda d: len(d.find_elements("css selector", rows)) == 25)
            out.append(time.perf_counter() - t0)
    finally:
        d.quit()
    return out


def scroll_latency(url: str, profile: Path, steps: int) -> list[float]:
    """Open the CT study, choose the lung window, press → on the Image slider ``steps`` times; seconds per step."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    d = _chrome(profile)
    wait = WebDriverWait(d, 300, poll_frequency=0.02)
    img = '[data-testid="stMain"] [data-testid="stImage"] img'
    try:
        d.get(url)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, img)
                   and d.find_element(By.CSS_SELECTOR, img).get_attribute("alt").startswith("CT view"))
        d.find_element(By.XPATH, "//div[@data-testid='stSelectbox'][.//p[normalize-space(.)='Window']]").click()
        wait.until(ec.element_to_be_clickable((By.XPATH, "//*[@role='option'][starts-with(normalize-space(.), "
                                                         "'lung')]"))).click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, img).get_attribute("alt").startswith(
            "CT view, W 1500 L -600"))
        rng = '[data-testid="stMain"] input[type="range"][aria-label="Image"]'
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        out = []
        for _ in range(steps):
            alt = d.find_element(By.CSS_SELECTOR, img).get_attribute("alt")
            k = int(alt.split("Im ")[1].split("/")[0])
            d.execute_script("arguments[0].focus()", d.find_element(By.CSS_SELECTOR, rng))
            t0 = time.perf_counter()
            ActionChains(d).send_keys(Keys.ARROW_RIGHT).perform()  # → on the Image slider: next slice
            wait.until(lambda d, k=k: d.execute_script(
                "const im = document.querySelector(arguments[0]);"
                "return im && im.alt.includes('Im ' + arguments[1] + '/') && im.complete && im.naturalWidth > 0;",
                img, k + 1))
            out.append(time.perf_counter() - t0)
            assert d.find_element(By.CSS_SELECTOR, img).get_attribute("alt").startswith("CT view, W 1500 L -600")
        return out
    finally:
        d.quit()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=1000)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/results/reading_benchmark", help="output stem (.md, .json, .png)")
    args = ap.parse_args()
    from medvit.io.writers import write_ct_series
    from tests.infer.helpers import write_dx

    tmp = Path(tempfile.mkdtemp(prefix="medvit-reading-bench-"))
    results = write_results(tmp / "results", args.studies)
    lib_s = library_worklist(results)
    small = tmp / "small"
    write_dx(small / "dx.dcm", "2.25.1", "2.25.2", rows=64, cols=64)
    ct = tmp / "ct"
    files = write_ct_series(ct / "series", args.slices, {"PatientID": "PCT", "StudyDate": "20240105",
                                                          "StudyDescription": "CT CHEST"}, size=512)
    steps = server_slice_steps(files)
    cpu = apptest_scroll_cpu(ct)
    proc, url = _serve(small, results, tmp, "worklist")
    try:
        paint = worklist_paint(url, tmp / "profile-wl")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    proc, url = _serve(ct, tmp / "no-results", tmp, "scroll")
    try:
        scroll = scroll_latency(url, tmp / "profile-ct", args.steps)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    res = {"command": "nice -n 10 .venv/bin/python benchmarks/reading_benchmark.py " + " ".join(sys.argv[1:]),
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared; load average "
                      f"{os.getloadavg()[0]:.1f} at the end)",
           "studies": args.studies, "slices": args.slices, "slice_size": "512x512 CT, 12-bit, lung window",
           "worklist_first_paint_seconds": paint, "worklist_library_seconds": lib_s,
           "scroll_step_seconds": scroll, "server_slice_steps_median_seconds": steps,
           "scroll_rerun_apptest_seconds": cpu}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2))
    sc = np.asarray(scroll)
    lines = ["# Reading benchmark: worklist first paint and CT slice scrolling (headless Chromium)", "",
             f"Command: `{res['command']}`  ", f"Machine: {res['machine']}", "",
             f"## Worklist first paint, {args.studies} studies of results", "",
             "| page load | seconds to first page (25 rows) |", "|---|---|"]
    lines += [f"| {'cold (first load of the server)' if i == 0 else f'warm {i}'} | {v:.2f} |"
              for i, v in enumerate(paint)]
    lines += ["", f"Library share (load {args.studies} studies from predictions.jsonl, reading status, sort by a "
                  f"finding, first page): {lib_s * 1000:.0f} ms (median of 5).", "",
              f"## Slice scrolling, {args.slices}-slice 512² CT series, lung window", "",
              f"→ on the slider → next slice on screen, {len(sc)} steps: median {np.median(sc):.2f} s, "
              f"p90 {np.percentile(sc, 90):.2f} s, max {sc.max():.2f} s; the window stayed W 1500 L -600 on every "
              "step.", "", "Server-side steps per slice (median, in-process, cold decode):", "",
              "| decode | render (lung) | downsample | PNG encode |", "|---|---|---|---|",
              f"| {steps['decode'] * 1000:.1f} ms | {steps['render_lung'] * 1000:.1f} ms | "
              f"{steps['compose'] * 1000:.1f} ms | {steps['png_encode'] * 1000:.1f} ms |", "",
              f"Whole viewer script rerun per scroll step (Streamlit AppTest, no browser): CPU median "
              f"{cpu['cpu_median'] * 1000:.0f} ms (max {cpu['cpu_max'] * 1000:.0f} ms), wall median "
              f"{cpu['wall_median']:.2f} s — the load-independent server cost of one step.", "",
              "Each step includes the Streamlit rerun of the whole page, the websocket round trip and the browser "
              "loading the PNG; the machine is shared (see load average), so treat absolute times as upper bounds."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].bar(["cold"] + [f"warm {i}" for i in range(1, len(paint))], paint, color="#4a7")
    ax[0].set_ylabel("seconds")
    ax[0].set_title(f"worklist first paint ({args.studies} studies)")
    ax[1].plot(range(1, len(sc) + 1), sc, "o-")
    ax[1].set_xlabel("scroll step")
    ax[1].set_ylabel("seconds")
    ax[1].set_title(f"next slice on screen ({args.slices}-slice CT)")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
