"""Regenerate docs/images/present.png, the README's screenshot of presentation mode: the
default ``handgrad draw --html --present`` page at step 3, in headless Chromium at
1366x768 (a projector's size), as the tests drive the browser.

    .venv/bin/python docs/make_screenshots.py

Needs Graphviz, selenium and chromedriver (Debian: chromium-driver).
"""
from __future__ import annotations

import contextlib
import io
import shutil
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent / "images" / "present.png"
SIZE = (1366, 768)
STEP = 3            # two rules have run: gradients on the picture, the third op runs


def main() -> int:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from handgrad.nn import cli

    driver_path = shutil.which("chromedriver")
    if driver_path is None:
        print("make_screenshots: chromedriver not found (Debian: apt-get install "
              "chromium-driver)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "present.html"
        with contextlib.redirect_stdout(io.StringIO()):
            if cli.main(["draw", "--html", "--present", "--out", str(page)]) != 0:
                return 2
        options = webdriver.ChromeOptions()
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1920,1300"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        try:
            width, height = SIZE           # the viewport a full-screen player gets
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False,
                "screenWidth": width, "screenHeight": height})
            driver.get(page.as_uri())
            player = driver.find_element(By.CSS_SELECTOR, ".hg-player")
            for _ in range(STEP):
                player.send_keys(Keys.PAGE_DOWN)       # what a clicker sends
            OUT.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(OUT))
        finally:
            driver.quit()
    print(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
