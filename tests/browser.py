"""Headless Chromium for the HMI tests (Debian's chromium + chromium-driver): starting it and logging in."""

from __future__ import annotations

import shutil
from typing import Any

from plc_peers import wait_for

BROWSER_WAIT = 45.0  # generous: a loaded 2-core CI machine starts Chromium slowly
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def browser(webdriver: Any) -> Any:
    """A headless Chromium (1280x900)."""
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def log_in(driver: Any, user: str, password: str) -> None:
    """Open the engineer page and log in as `user`; returns once the page names the user."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, "nav a[data-page=engineer]").click()
    driver.find_element(By.NAME, "user").send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait_for(lambda: driver.find_element(By.ID, "who").text.startswith(user + " "), timeout=BROWSER_WAIT,
             what=f"logged in as {user}")


def log_in_as_engineer(driver: Any, user: str = "eng", password: str = "engineer-pass") -> None:
    """Log in as an engineer; returns once the engineer panel shows."""
    from selenium.webdriver.common.by import By

    log_in(driver, user, password)
    wait_for(lambda: driver.find_element(By.ID, "engineer-panel").is_displayed(), timeout=BROWSER_WAIT,
             what="engineer panel")
