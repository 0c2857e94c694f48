"""Renders Superset dashboards in headless Chromium, as a person at a wall screen sees them.

Signs in through Superset's login form, opens each dashboard (by slug) in standalone
mode, waits until every chart has finished loading, and prints one JSON object:

  {"dashboards": [{"slug", "charts", "errors", "screenshot"}],
   "queries": {"<chart id>": <the query context the page posted for it>}}

`charts` counts the chart containers on the page, `errors` holds the text of every
chart that shows an error instead of a picture, and `queries` are the bodies of the
page's own POSTs to /api/v1/chart/data (read from Chromium's network log), so that a
caller can ask Superset's API exactly what the page asked.

Usage: superset_render.py --url URL --password P --chromium BIN --chromedriver BIN
                          --out DIR SLUG...
"""

import argparse
import json
import sys
import tempfile
import time

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

# The flags the machine's Chromium needs headless as root and without a network
# beyond loopback: no sandbox (root), no GPU, and no background connections, which
# the closed network refuses.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1600,1300",
]

# Superset marks a chart still waiting for data with a `loading` element, and a
# chart whose query failed with an error alert inside its container.
CHART = ".dashboard-component-chart-holder"
LOADING = ".loading"
ERROR = (
    ".dashboard-component-chart-holder [role='alert'], "
    ".dashboard-component-chart-holder .ant-alert-error, "
    ".dashboard-component-chart-holder [data-test='chart-error']"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", required=True)
    parser.add_argument("--chromium", required=True)
    parser.add_argument("--chromedriver", required=True)
    parser.add_argument("--out", required=True, help="folder for the PNG screenshots")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("slugs", nargs="+")
    args = parser.parse_args()

    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="lake-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=args.chromedriver), options=options)
    driver.set_page_load_timeout(args.timeout)
    try:
        sign_in(driver, args)
        dashboards = []
        queries = {}
        for slug in args.slugs:
            dashboards.append(render(driver, args, slug, queries))
        json.dump({"dashboards": dashboards, "queries": queries}, sys.stdout)
        print()
    finally:
        driver.quit()
    return 0


def sign_in(driver, args) -> None:
    driver.get(f"{args.url}/login/")
    wait(args.timeout, "the login form", lambda: driver.find_elements(By.NAME, "username"))
    driver.find_element(By.NAME, "username").send_keys(args.username)
    password = driver.find_element(By.NAME, "password")
    password.send_keys(args.password)
    password.submit()
    wait(
        args.timeout,
        "signing in",
        lambda: "/login" not in driver.current_url
        and any(cookie["name"] == "session" for cookie in driver.get_cookies()),
    )


def render(driver, args, slug: str, queries: dict) -> dict:
    driver.get_log("performance")  # drop what earlier pages logged
    driver.get(f"{args.url}/superset/dashboard/{slug}/?standalone=1")
    wait(args.timeout, f"the charts of {slug}", lambda: driver.find_elements(By.CSS_SELECTOR, CHART))

    def settled():
        charts = driver.find_elements(By.CSS_SELECTOR, CHART)
        busy = driver.find_elements(By.CSS_SELECTOR, f"{CHART} {LOADING}")
        drawn = driver.find_elements(
            By.CSS_SELECTOR, f"{CHART} canvas, {CHART} svg, {CHART} table, {CHART} .header-line"
        )
        failed = driver.find_elements(By.CSS_SELECTOR, ERROR)
        return charts and not busy and len(drawn) + len(failed) >= len(charts)

    wait(args.timeout, f"every chart of {slug} to finish", settled)
    # ECharts animates its first frame; a screenshot mid-animation shows half bars.
    time.sleep(2)
    charts = driver.find_elements(By.CSS_SELECTOR, CHART)
    errors = [e.text.strip() or "(an error without text)" for e in driver.find_elements(By.CSS_SELECTOR, ERROR)]
    screenshot = f"{args.out}/{slug}.png"
    driver.set_window_size(1600, max(1300, page_height(driver)))
    driver.save_screenshot(screenshot)
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") != "Network.requestWillBeSent":
            continue
        request = message["params"]["request"]
        if request.get("method") != "POST" or "/api/v1/chart/data" not in request.get("url", ""):
            continue
        body = request.get("postData")
        if body is None and request.get("hasPostData"):
            try:
                body = driver.execute_cdp_cmd(
                    "Network.getRequestPostData", {"requestId": message["params"]["requestId"]}
                )["postData"]
            except WebDriverException:
                body = None
        if body is None:
            continue
        context = json.loads(body)
        chart = context.get("form_data", {}).get("slice_id")
        if chart is not None:
            queries[str(chart)] = context
    return {"slug": slug, "charts": len(charts), "errors": errors, "screenshot": screenshot}


def page_height(driver) -> int:
    return int(driver.execute_script("return document.documentElement.scrollHeight") or 0)


def wait(timeout: float, what: str, ready) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except WebDriverException:
            pass
        time.sleep(0.25)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


if __name__ == "__main__":
    sys.exit(main())
