"""The scheduler's web UI in a real headless browser (Debian's Chromium, driven by
Playwright) against a scheduler and two executors started from QUIVER_BIN:

- a long query sent through ADBC shows on the Queries page while it runs;
- its detail page draws the stage DAG, whose task counts move as tasks finish;
- the Cancel button stops it, and its ADBC client hears that it was cancelled;
- the Executors page lists every executor;
- with logins configured, pages show nothing but the login form until one logs in.

Screenshots of the pages go to $QUIVER_UI_SCREENSHOTS when it is set (the README's come
from there).
"""

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
from playwright.sync_api import sync_playwright

from ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[3]
TPCH = ROOT / "testdata" / "tpch" / "sf0.01"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags for a machine without network: no background connections, no sandbox (root).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# Twelve tasks of about a second each over two slots: they finish in waves.
LONG_QUERY = (
    "SELECT count(*) AS web_ui_long_query FROM lineitem a, "
    "(SELECT p_type FROM part) b, (VALUES (1), (2), (3), (4)) c(n) "
    "WHERE a.l_comment LIKE concat('%', b.p_type, '%', c.n)"
)


def start_cluster(extra_scheduler_args=()):
    """A scheduler with its HTTP port and two one-slot executors: (processes, flight port,
    http port)."""
    binary = os.environ["QUIVER_BIN"]
    port, http = free_port(), free_port()
    env = dict(os.environ, QUIVER_EPHEMERAL="true")
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    processes = [
        subprocess.Popen(
            [binary, "scheduler", "--bind", f"127.0.0.1:{port}", "--http", f"127.0.0.1:{http}",
             "--target-partitions", "12", *extra_scheduler_args],
            **quiet,
        )
    ]
    for _ in range(2):
        processes.append(
            subprocess.Popen(
                [binary, "executor", "--scheduler", f"http://127.0.0.1:{port}", "--slots", "1"],
                **quiet,
            )
        )
    wait_for_port(port)
    wait_for_port(http)
    return processes, port, http


def stop(processes):
    for process in processes:
        process.kill()
        process.wait()


def launch_browser(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


class Screenshots:
    def __init__(self):
        self.directory = os.environ.get("QUIVER_UI_SCREENSHOTS") or tempfile.mkdtemp()
        os.makedirs(self.directory, exist_ok=True)

    def take(self, page, name):
        path = os.path.join(self.directory, name)
        page.screenshot(path=path, full_page=True)
        return path


def wait_until(condition, seconds, message):
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.1)


class WebUiOfAnOpenCluster(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.processes, cls.port, cls.http = start_cluster()
        cls.base = f"http://127.0.0.1:{cls.http}"
        cls.conn = flightsql.connect(f"grpc://127.0.0.1:{cls.port}")
        with cls.conn.cursor() as cur:
            for table in ("lineitem", "part"):
                cur.execute(
                    f"CREATE EXTERNAL TABLE {table} STORED AS PARQUET LOCATION '{TPCH / table}/'"
                )
                cur.fetch_arrow_table()
        cls.playwright = sync_playwright().start()
        cls.browser = launch_browser(cls.playwright)
        cls.screenshots = Screenshots()

    @classmethod
    def tearDownClass(cls):
        cls.browser.close()
        cls.playwright.stop()
        cls.conn.close()
        stop(cls.processes)

    def api(self, path):
        with urllib.request.urlopen(self.base + path, timeout=10) as response:
            return json.load(response)

    def test_a_running_query_shows_moves_and_is_cancelled_from_its_page(self):
        outcome = {}

        def run():
            started = time.monotonic()
            try:
                with self.conn.cursor() as cur:
                    cur.execute(LONG_QUERY)
                    outcome["rows"] = cur.fetch_arrow_table().num_rows
            except Exception as error:  # the cancellation, as the client hears it
                outcome["error"] = str(error)
            outcome["seconds"] = time.monotonic() - started

        client = threading.Thread(target=run)
        client.start()
        page = self.browser.new_page(viewport={"width": 1300, "height": 900})
        try:
            # The Queries page lists it while it runs, with a progress bar.
            page.goto(self.base + "/")
            row = page.locator("#queries tr[data-state='running']", has_text="web_ui_long_query")
            row.wait_for(timeout=30_000)
            self.assertIn("%", row.inner_text())
            self.screenshots.take(page, "queries.png")

            # Its detail page: the stage DAG, whose finished-task counts rise as it runs.
            row.locator("a").click()
            page.wait_for_url("**/queries/*")
            page.locator("#dag g.stage").first.wait_for(timeout=10_000)
            stages = page.locator("#dag g.stage")
            self.assertGreaterEqual(stages.count(), 2)

            def tasks_done():
                return sum(
                    int(stage.get_attribute("data-done"))
                    for stage in page.locator("#dag g.stage").all()
                )

            first = tasks_done()
            wait_until(
                lambda: tasks_done() > first and "error" not in outcome,
                30,
                f"the DAG's done-task counts should rise while the query runs (from {first})",
            )
            heavy = page.locator("#dag g.stage[data-state='running']")
            self.assertGreaterEqual(heavy.count(), 1)
            total = int(heavy.first.get_attribute("data-total"))
            self.assertGreater(total, int(heavy.first.get_attribute("data-done")))
            self.assertGreater(page.locator("#timeline rect.task").count(), 0)
            self.screenshots.take(page, "query.png")

            # Cancel: the query ends everywhere and its client is told.
            clicked = time.monotonic()
            page.locator("#cancel").click()
            client.join(timeout=30)
            self.assertFalse(client.is_alive(), "the cancelled query's client should return")
            self.assertIn("cancel", outcome.get("error", "").lower(), outcome)
            self.assertLess(time.monotonic() - clicked, 20)
            page.locator("#dag g.stage[data-state='cancelled']").first.wait_for(timeout=10_000)
            self.assertEqual(page.locator("#cancel").count(), 0, "no Cancel once it ended")
        finally:
            page.close()
            client.join(timeout=60)

        # The cluster serves on.
        with self.conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM part")
            self.assertEqual(cur.fetch_arrow_table().column(0).to_pylist(), [2000])

    def test_the_executors_page_lists_every_executor(self):
        executors = [e for e in self.api("/api/executors") if e["state"] == "alive"]
        self.assertEqual(len(executors), 2)
        page = self.browser.new_page(viewport={"width": 1300, "height": 700})
        try:
            page.goto(self.base + "/executors")
            page.locator("#executors tr[data-executor]").first.wait_for(timeout=10_000)
            shown = sorted(
                row.get_attribute("data-executor")
                for row in page.locator("#executors tr[data-executor]").all()
            )
            self.assertEqual(shown, sorted(e["id"] for e in executors))
            self.screenshots.take(page, "executors.png")
        finally:
            page.close()


class WebUiWithLogins(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.processes, cls.port, cls.http = start_cluster(["--user", "ann:s3cret"])
        cls.base = f"http://127.0.0.1:{cls.http}"
        cls.playwright = sync_playwright().start()
        cls.browser = launch_browser(cls.playwright)

    @classmethod
    def tearDownClass(cls):
        cls.browser.close()
        cls.playwright.stop()
        stop(cls.processes)

    def test_pages_need_a_login_through_the_form(self):
        with self.assertRaises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(self.base + "/api/queries", timeout=10)
        self.assertEqual(refused.exception.code, 401)

        page = self.browser.new_page()
        try:
            for path in ("/", "/executors", "/queries/anything"):
                page.goto(self.base + path)
                self.assertTrue(page.url.endswith("/login"), page.url)
                self.assertEqual(page.locator("#queries, #executors, #dag").count(), 0)
            page.fill("#user", "ann")
            page.fill("#password", "wrong")
            page.click("button[type=submit]")
            self.assertIn("invalid user name or password", page.inner_text("#error"))

            page.fill("#user", "ann")
            page.fill("#password", "s3cret")
            page.click("button[type=submit]")
            page.locator("#queries").wait_for(timeout=10_000)
            self.assertEqual(page.inner_text("#who"), "ann")
            page.goto(self.base + "/executors")
            page.locator("#executors tr[data-executor]").first.wait_for(timeout=10_000)

            # Logging out ends it.
            page.click("#logout button")
            page.wait_for_url("**/login")
            page.goto(self.base + "/")
            self.assertTrue(page.url.endswith("/login"), page.url)
        finally:
            page.close()


if __name__ == "__main__":
    unittest.main()
