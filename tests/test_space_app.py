"""The exported Spaces demo in a real headless browser: `space/app.py` starts from the exported folder alone (python
-I, offline, another working directory) on a loopback port; the folder holds a pretraining model at its root
(zero-shot scores, heatmap) and a report generator in `report_generation/` (`--task-checkpoint`). Debian's chromium,
driven by Selenium, uploads a SynthCXR PNG and a DICOM and reads the finding scores, the generated report and the
heatmap on the same page, then bad files (text renamed
.png, a DICOM without pixel data, a 1x1 image) which must give a message in the page, not a stack trace."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from dicom_fixtures import write_dicom
from export_testing import synthcxr_png, write_pretraining_run, write_report_generation_run
from PIL import Image

from train.cli import main as medvl

pytestmark = pytest.mark.slow  # an export, a server and a headless browser
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,2000"]


def browser(profile):
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    if missing:
        pytest.fail(f"the Space browser test needs Debian's chromium and chromedriver ({missing} missing): "
                    "`apt-get install -y chromium chromium-driver`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_server(url, process, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(f"space/app.py exited early:\n{process.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"space/app.py did not serve {url} within {timeout} s")


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    root = tmp_path_factory.mktemp("space")
    out = root / "hub" / "medvl-tiny"
    report_checkpoint, _, _ = write_report_generation_run(root)
    assert medvl(["export", "--checkpoint", str(write_pretraining_run(root)), "--out", str(out), "--no-check",
                  "--task-checkpoint", f"report_generation={report_checkpoint}"]) == 0
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(root / "hf"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-I", str(out / "space" / "app.py"), "--port", str(port)],
                               cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_server(f"http://127.0.0.1:{port}/", process)
        yield f"http://127.0.0.1:{port}/", root
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_space_demo_in_headless_chromium(space, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, root = space
    png = synthcxr_png(tmp_path / "synthcxr.png", size=128)
    pixels = np.asarray(Image.open(png).resize((96, 96)), dtype=np.uint16) * 16
    dicom = write_dicom(tmp_path / "study.dcm", pixels) or tmp_path / "study.dcm"
    text_as_png = tmp_path / "notes.png"
    text_as_png.write_text("not an image")
    no_pixels = write_dicom(tmp_path / "report.dcm") or tmp_path / "report.dcm"
    tiny = tmp_path / "tiny.png"
    Image.new("L", (1, 1)).save(tiny)
    driver = browser(tmp_path / "chromium-profile")

    def analyse(path, expected):
        driver.get(url)
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
        driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(path))
        wait.until(lambda d: path.stem in d.find_element(By.ID, "upload").text)  # the upload has landed
        driver.find_element(By.ID, "analyse").click()
        wait.until(lambda d: expected in d.find_element(By.ID, "status").text)
        return driver.find_element(By.ID, "status").text

    try:
        for path, size in ((png, "128×128"), (dicom, "96×96")):
            assert "heatmap for" in analyse(path, f"Analysed a {size} image")
            findings = driver.find_element(By.ID, "zero-shot").text
            assert "cardiomegaly" in findings and "%" in findings
            report = driver.find_element(By.CSS_SELECTOR, "#report textarea").get_attribute("value").strip()
            # generated by report_generation/'s model: special tokens are pushed down, so it always writes text
            assert report and "no report generator" not in report and report != "(empty report)"
            heatmap = driver.find_elements(By.CSS_SELECTOR, "#heatmap img")
            assert heatmap and heatmap[0].get_attribute("src")
            assert "not a medical device" in driver.find_element(By.ID, "disclaimer").text.lower()
            driver.save_screenshot(str(tmp_path / f"space-{path.suffix[1:]}.png"))
        for path, message in ((text_as_png, "not a recognised image format"), (no_pixels, "no pixel data"),
                              (tiny, "1×1 pixels")):
            assert analyse(path, message).startswith("⚠️")
            assert "Traceback" not in driver.page_source
    finally:
        driver.quit()
    shutil.copy(tmp_path / "space-png.png", root / "space-png.png")
