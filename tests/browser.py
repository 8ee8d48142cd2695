"""A real headless browser for the console tests: Debian's chromium and chromedriver, driven by selenium.

:func:`browser_problem` says why no browser can run here (``None`` when one can): selenium not
installed, or ``/usr/bin/chromium`` / ``/usr/bin/chromedriver`` missing (``apt-get install -y
chromium chromium-driver``; ``.ci/run`` installs them). :func:`start_chrome` starts one, headless,
with a fixed window size so that screenshots compare across runs, and with the browser's console
log kept so that a test can fail on a script error (:func:`script_errors`).

Screenshots go to :data:`ARTIFACTS` (``tests/artifacts/console/``, ignored by git).

Plain module: no pytest imports, no fixtures.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

CHROMIUM = Path(os.environ.get("SHIMMIE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("SHIMMIE_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "console"
WINDOW = (1280, 860)
#: Console messages that are not script errors: the browser logs every 4xx/5xx a fetch() got,
#: and the tests ask for refusals on purpose.
EXPECTED_NOISE = ("Failed to load resource",)


def browser_problem() -> str | None:
    """Why the browser tests cannot run here, or ``None``."""
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -e .[test])"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.is_file():
            return f"{path} is missing (apt-get install -y --no-install-recommends {package})"
    return None


def start_chrome() -> Any:
    """A headless Chromium under chromedriver (both from the system, never downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_window_size(*WINDOW)
    return driver


def script_errors(driver: Any) -> list[str]:
    """The browser console's errors since the last call, but for failed requests (asked for)."""
    entries = driver.get_log("browser")
    return [
        entry["message"]
        for entry in entries
        if entry.get("level") == "SEVERE" and not any(noise in entry["message"] for noise in EXPECTED_NOISE)
    ]


def screenshot(driver: Any, name: str) -> Path:
    """Save the window as ``ARTIFACTS/<name>.png``; return the path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
