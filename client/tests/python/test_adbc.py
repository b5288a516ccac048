"""Quiver through a third-party client: Python ADBC (adbc-driver-flightsql) + pyarrow.

Starts a real scheduler and two executors (the `quiver` binary named by QUIVER_BIN), then
checks query answers against single-node computation in pyarrow over the same files.
"""

import os
import socket
import subprocess
import time
import unittest
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[3]
TPCH = ROOT / "testdata" / "tpch" / "sf0.01"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QuiverOverAdbc(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        binary = os.environ["QUIVER_BIN"]
        port = free_port()
        cls.uri = f"grpc://127.0.0.1:{port}"
        scheduler_url = f"http://127.0.0.1:{port}"
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cls.processes = [
            subprocess.Popen([binary, "scheduler", "--bind", f"127.0.0.1:{port}"], **quiet)
        ]
        for _ in range(2):
            cls.processes.append(
                subprocess.Popen(
                    [binary, "executor", "--scheduler", scheduler_url, "--slots", "2"], **quiet
                )
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        cls.conn = flightsql.connect(cls.uri)
        with cls.conn.cursor() as cur:
            for table in ("nation", "region", "lineitem"):
                cur.execute(
                    f"CREATE EXTERNAL TABLE {table} STORED AS PARQUET LOCATION '{TPCH / table}/'"
                )
                cur.fetch_arrow_table()

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

    def test_select_one(self):
        table = self.query("SELECT 1 AS one")
        self.assertEqual(table.column("one").to_pylist(), [1])

    def test_multi_stage_aggregate_matches_pyarrow(self):
        table = self.query(
            "SELECT l_returnflag, count(*) AS n FROM lineitem GROUP BY l_returnflag ORDER BY l_returnflag"
        )
        lineitem = pq.read_table(TPCH / "lineitem", columns=["l_returnflag"])
        expected = lineitem.group_by("l_returnflag").aggregate([("l_returnflag", "count")])
        expected = dict(
            zip(
                expected.column("l_returnflag").to_pylist(),
                expected.column("l_returnflag_count").to_pylist(),
            )
        )
        self.assertEqual(
            dict(zip(table.column("l_returnflag").to_pylist(), table.column("n").to_pylist())),
            expected,
        )
        self.assertEqual(table.column("l_returnflag").to_pylist(), sorted(expected))

    def test_join_matches_pyarrow(self):
        table = self.query(
            "SELECT n_name, r_name FROM nation JOIN region ON n_regionkey = r_regionkey"
        )
        nation = pq.read_table(TPCH / "nation")
        self.assertEqual(table.num_rows, nation.num_rows)
        self.assertEqual(table.column("r_name").to_pylist().count("ASIA"), 5)

    def test_bad_sql_is_an_error_naming_the_cause(self):
        with self.assertRaises(Exception) as caught:
            self.query("SELECT * FROM no_such_table")
        self.assertIn("no_such_table", str(caught.exception))
        self.assertEqual(self.query("SELECT 2 AS two").column("two").to_pylist(), [2])


if __name__ == "__main__":
    unittest.main()
