"""The explorers in a real browser: Voila serves a notebook with the class explorer and the visual Turing test,
headless Chromium (Debian's chromium + chromedriver, driven by selenium) moves a slider and clicks a button, and
the picture and the saved answers must change.

Run with ``make browser-test`` (installs Chromium with apt-get when it is missing, and voila + selenium from
``requirements-browser.txt``). ``MEDGAN_SCREENSHOT=path.png`` also saves a screenshot of the page.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is installed by `make browser-test`")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="Debian's chromium and chromium-driver are installed by `make browser-test`")

EXPLORER_CELL = '''\
import torch
from medgan_core.registry import build_model
from medgan_core.widgets import class_explorer

torch.manual_seed(0)
G, _, _ = build_model("cdcgan", image_size=32, g_features=8, d_features=8, num_classes=2)
class_explorer(G.eval(), ["glioma", "notumor"], max_images=4)
'''
# MEDGAN_BROWSER_GENERATOR=<run folder of a conditional model>: the explorer shows it (for the README screenshot)
TRAINED_EXPLORER_CELL = '''\
import torch
from medgan_core import load_generator
from medgan_core.widgets import class_explorer

class_explorer(load_generator({source!r}), max_images=16)
'''
TURING_CELL = '''\
from medgan_core.data import ImageSet
from medgan_core.turing import build_trials
from medgan_core.widgets import turing_test

def shapes(n, value):
    return ImageSet(torch.full((n, 1, 32, 32), value, dtype=torch.uint8), torch.zeros(n, dtype=torch.long), ["glioma"])

trials = build_trials(shapes(4, 30), {"dcgan": shapes(4, 200)}, n_real=3, n_per_model=3, seed=0)
turing_test(trials, FOLDER, "browser")
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    """Voila serving the explorer notebook; yields (url, answers folder)."""
    answers = tmp_path / "answers"
    trained = os.environ.get("MEDGAN_BROWSER_GENERATOR")
    explorer = TRAINED_EXPLORER_CELL.format(source=trained) if trained else EXPLORER_CELL
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(explorer),
                                               nbformat.v4.new_code_cell(f"FOLDER = {str(answers)!r}\n" + TURING_CELL)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "explorers.ipynb"
    nbformat.write(notebook, path)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "voila", str(path), "--no-browser", f"--port={port}",
                               "--Voila.ip=127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).close()
            break
        except OSError:
            assert server.poll() is None, "voila exited"
            assert time.monotonic() < deadline, "voila did not answer within 60 s"
            time.sleep(0.5)
    yield url, answers
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1400"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def test_a_slider_redraws_the_picture_and_a_click_saves_an_answer(served, browser):
    url, answers = served
    browser.get(url)
    wait = WebDriverWait(browser, 90)
    images = wait.until(lambda d: [i for i in d.find_elements(By.CSS_SELECTOR, "img.widget-image")
                                   if (i.get_attribute("src") or "").startswith(("blob:", "data:"))] or None)
    assert len(images) == 2, "the explorer's and the Turing test's pictures"
    before = images[0].get_attribute("src")

    seed_readout = browser.find_elements(By.CSS_SELECTOR, ".widget-slider .widget-readout")[0]
    seed_readout.click()
    seed_readout.send_keys(Keys.CONTROL, "a")
    seed_readout.send_keys("7", Keys.ENTER)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "img.widget-image")[0].get_attribute("src") != before)

    status = lambda d: " ".join(e.text for e in d.find_elements(By.CSS_SELECTOR, ".widget-label"))  # noqa: E731
    assert "image 1 of 6" in status(browser)
    next(b for b in browser.find_elements(By.CSS_SELECTOR, "button") if b.text == "Real").click()
    wait.until(lambda d: "image 2 of 6" in status(d))
    saved = (answers / "turing-browser.csv").read_text().splitlines()
    assert len(saved) == 2 and ",real," in saved[1], saved
    if os.environ.get("MEDGAN_SCREENSHOT"):
        browser.set_window_size(1000, 2000)  # the whole page, scrolled to its top (Voila scrolls an inner panel)
        browser.execute_script("document.querySelectorAll('*').forEach(e => { e.scrollTop = 0; });")
        browser.save_screenshot(os.environ["MEDGAN_SCREENSHOT"])
