"""Prometheus `/metrics` of a scheduler and an executor (the `quiver` binary named by
QUIVER_BIN, started with `--http`), read with prometheus_client's own text parser:
counters rise after queries run through ADBC, and gauges fall back to zero once the
cluster is idle. Also: distributed EXPLAIN ANALYZE comes back through ADBC with every
stage and its operators' metrics; and `--log-format json` writes one JSON object a line,
carrying the job, stage, task, attempt and user of the work it belongs to.
"""

import json
import os
import tempfile
import subprocess
import time
import unittest
import urllib.request

import adbc_driver_flightsql.dbapi as flightsql
from prometheus_client.parser import text_string_to_metric_families

from ports import free_port, wait_for_port


def scrape(port):
    """Every sample of the metrics at 127.0.0.1:port, as {(name, labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "executor"))
            samples[(sample.name, labels)] = sample.value
    return samples


class MetricsOverHttp(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        binary = os.environ["QUIVER_BIN"]
        port, cls.scheduler_http, cls.executor_http = free_port(), free_port(), free_port()
        env = dict(os.environ, QUIVER_EPHEMERAL="true")
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        cls.processes = [
            subprocess.Popen(
                [binary, "scheduler", "--bind", f"127.0.0.1:{port}",
                 "--http", f"127.0.0.1:{cls.scheduler_http}", "--target-partitions", "2"],
                **quiet,
            ),
            subprocess.Popen(
                [binary, "executor", "--scheduler", f"http://127.0.0.1:{port}", "--slots", "2",
                 "--http", f"127.0.0.1:{cls.executor_http}"],
                **quiet,
            ),
        ]
        for waited in (port, cls.scheduler_http, cls.executor_http):
            wait_for_port(waited)
        cls.conn = flightsql.connect(f"grpc://127.0.0.1:{port}")

    @classmethod
    def tearDownClass(cls):
        cls.conn.close()
        for process in cls.processes:
            process.kill()
            process.wait()

    def query(self, sql):
        with self.conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table()

    def test_counters_rise_and_gauges_return_to_zero(self):
        before = scrape(self.scheduler_http)
        executor_before = scrape(self.executor_http)
        for n in range(3):
            table = self.query(
                f"SELECT x % 3 AS k, count(*) AS c FROM (VALUES (1), (2), ({n})) t(x) GROUP BY k"
            )
            self.assertGreater(table.num_rows, 0)
        after = scrape(self.scheduler_http)
        executor_after = scrape(self.executor_http)

        succeeded = ("quiver_statements_total", (("outcome", "succeeded"),))
        self.assertGreaterEqual(after[succeeded] - before.get(succeeded, 0), 3)
        tasks = ("quiver_tasks_total", (("outcome", "succeeded"),))
        self.assertGreaterEqual(after[tasks] - before.get(tasks, 0), 3)
        durations = ("quiver_statement_duration_seconds_count", ())
        self.assertGreaterEqual(after[durations] - before.get(durations, 0), 3)
        executor_tasks = ("quiver_executor_tasks_total", (("outcome", "succeeded"),))
        self.assertGreaterEqual(
            executor_after[executor_tasks] - executor_before.get(executor_tasks, 0), 3
        )
        # The GROUP BY's final stage read the first stage's output from the store.
        fetched = ("quiver_executor_shuffle_fetched_bytes_total", (("source", "local"),))
        self.assertGreater(executor_after[fetched], executor_before.get(fetched, 0))
        # gRPC calls on the control ports: the scheduler launched tasks on the executor,
        # which reported them back.
        launches = ("quiver_executor_calls_total", (("code", "Ok"), ("method", "LaunchTasks")))
        self.assertGreater(executor_after[launches], executor_before.get(launches, 0))
        reports = ("quiver_control_calls_total", (("code", "Ok"), ("method", "ReportTaskStatus")))
        self.assertGreaterEqual(after[reports] - before.get(reports, 0), 3)
        calls = ("quiver_flight_calls_total", (("code", "Ok"), ("method", "GetFlightInfo")))
        self.assertGreaterEqual(after[calls] - before.get(calls, 0), 3)
        self.assertEqual(after[("quiver_executors_alive", ())], 1)
        self.assertEqual(after[("quiver_slots", (("state", "total"),))], 2)

        # Idle again: every gauge of work in flight is back at zero.
        deadline = time.monotonic() + 10
        while True:
            idle = scrape(self.scheduler_http)
            executor_idle = scrape(self.executor_http)
            busy = {
                "jobs": idle[("quiver_jobs_running", ())],
                "queued": idle[("quiver_statements_queued", ())],
                "slots used": idle[("quiver_slots", (("state", "used"),))],
                "executor tasks": executor_idle[("quiver_executor_tasks_running", ())],
                "executor memory": executor_idle[
                    ("quiver_executor_memory_pool_reserved_bytes", ())
                ],
                # Results read to the end through ADBC are released at once, not after
                # the ten minutes results are otherwise kept.
                "results held": executor_idle[("quiver_executor_shuffle_memory_bytes", ())],
            }
            if all(value == 0 for value in busy.values()):
                break
            self.assertLess(time.monotonic(), deadline, f"still busy: {busy}")
            time.sleep(0.1)

    def test_explain_analyze_comes_back_through_adbc(self):
        table = self.query(
            "EXPLAIN ANALYZE SELECT x % 2 AS k, count(*) FROM "
            "(VALUES (1), (2), (3), (4)) t(x) GROUP BY k"
        )
        self.assertEqual(table.column("plan_type").to_pylist(), ["Plan with Metrics"])
        text = table.column("plan").to_pylist()[0]
        stages = [line for line in text.splitlines() if line.startswith("Stage ")]
        self.assertGreaterEqual(len(stages), 2, text)
        self.assertIn("AggregateExec", text)
        self.assertRegex(text, r"AggregateExec: mode=FinalPartitioned.*output_rows=2,")

    def test_other_paths_are_not_found(self):
        with self.assertRaises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{self.scheduler_http}/nope", timeout=5)
        self.assertEqual(missing.exception.code, 404)


class JsonLogLines(unittest.TestCase):
    def test_every_line_is_json_and_carries_the_work_it_belongs_to(self):
        binary = os.environ["QUIVER_BIN"]
        port = free_port()
        logs = tempfile.mkdtemp()
        scheduler_log = open(os.path.join(logs, "scheduler.log"), "wb")
        executor_log = open(os.path.join(logs, "executor.log"), "wb")
        env = dict(os.environ, QUIVER_EPHEMERAL="true")
        processes = [
            subprocess.Popen(
                [binary, "--log-format", "json", "scheduler", "--bind", f"127.0.0.1:{port}",
                 "--target-partitions", "2"],
                stdout=subprocess.DEVNULL, stderr=scheduler_log, env=dict(env, RUST_LOG="info"),
            ),
            subprocess.Popen(
                [binary, "executor", "--log-format", "json",
                 "--scheduler", f"http://127.0.0.1:{port}", "--slots", "2"],
                stdout=subprocess.DEVNULL, stderr=executor_log,
                env=dict(env, RUST_LOG="quiver_executor=debug"),
            ),
        ]
        try:
            wait_for_port(port)
            with flightsql.connect(f"grpc://127.0.0.1:{port}") as conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT x % 2 AS k, count(*) FROM (VALUES (1), (2), (3)) t(x) GROUP BY k"
                )
                self.assertEqual(cur.fetch_arrow_table().num_rows, 2)
        finally:
            for process in processes:
                process.kill()
                process.wait()
            scheduler_log.close()
            executor_log.close()

        def lines(name):
            with open(os.path.join(logs, name)) as log:
                parsed = [json.loads(line) for line in log if line.strip()]
            for line in parsed:
                self.assertTrue({"timestamp", "level", "target"} <= line.keys(), line)
                self.assertRegex(line["timestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            return parsed

        submitted = [l for l in lines("scheduler.log") if l.get("message") == "job submitted"]
        self.assertTrue(submitted)
        self.assertTrue({"job", "user", "session"} <= submitted[0].keys(), submitted[0])
        tasks = [l for l in lines("executor.log") if l.get("message") == "task succeeded"]
        self.assertTrue(tasks)
        for line in tasks:
            self.assertTrue(
                {"job", "stage", "partition", "attempt", "user"} <= line.keys(), line
            )
            self.assertIsInstance(line["stage"], int)
        self.assertIn(submitted[0]["job"], {line["job"] for line in tasks})


if __name__ == "__main__":
    unittest.main()
