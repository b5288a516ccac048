"""Quiver through a third-party client: Python ADBC (adbc-driver-flightsql) + pyarrow.

Starts a real scheduler that requires a login and two executors (the `quiver` binary named
by QUIVER_BIN), then checks answers against computations in pyarrow over the same files,
the metadata calls drivers and BI tools make, parameters, updates, cancellation, and the
README's "Use from Python" snippet as written there.
"""

import os
import re
import subprocess
import threading
import time
import unittest
from datetime import date
from decimal import Decimal
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[3]
TPCH = ROOT / "testdata" / "tpch" / "sf0.01"
USER, PASSWORD = "alice", "wonderland"
LONG_QUERY = (
    "SELECT count(*) FROM lineitem a, lineitem b WHERE a.l_orderkey + b.l_orderkey > 5"
)


def read_parquet(table, columns=None):
    """A TPC-H table of testdata/ read by pyarrow, string views as plain strings (pyarrow's
    compute functions do not all take views)."""
    data = pq.read_table(TPCH / table, columns=columns)
    fields = [
        pa.field(f.name, pa.string()) if f.type == pa.string_view() else f for f in data.schema
    ]
    return data.cast(pa.schema(fields))


def login(uri, user=USER, password=PASSWORD):
    return flightsql.connect(uri, db_kwargs={"username": user, "password": password})


class QuiverOverAdbc(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        binary = os.environ["QUIVER_BIN"]
        port = free_port()
        cls.uri = f"grpc://127.0.0.1:{port}"
        scheduler_url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, QUIVER_CLUSTER_SECRET="python-test-secret", QUIVER_EPHEMERAL="true")
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        cls.processes = [
            subprocess.Popen(
                [binary, "scheduler", "--bind", f"127.0.0.1:{port}",
                 "--user", f"{USER}:{PASSWORD}", "--target-partitions", "4"],
                **quiet,
            )
        ]
        for _ in range(2):
            cls.processes.append(
                subprocess.Popen(
                    [binary, "executor", "--scheduler", scheduler_url, "--slots", "2"], **quiet
                )
            )
        wait_for_port(port)
        cls.conn = login(cls.uri)
        with cls.conn.cursor() as cur:
            for table in ("nation", "region", "lineitem", "orders"):
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

    def query(self, sql, parameters=None):
        with self.conn.cursor() as cur:
            cur.execute(sql, parameters=parameters)
            return cur.fetch_arrow_table()

    def test_select_one(self):
        table = self.query("SELECT 1 AS one")
        self.assertEqual(table.column("one").to_pylist(), [1])

    def test_tpch_q6_matches_pyarrow(self):
        sql = (ROOT / "testdata" / "tpch" / "queries" / "q6.sql").read_text()
        revenue = self.query(sql).column(0).to_pylist()[0]
        li = read_parquet(
            "lineitem",
            columns=["l_shipdate", "l_discount", "l_quantity", "l_extendedprice"],
        )
        keep = pc.and_(
            pc.and_(
                pc.greater_equal(li["l_shipdate"], pa.scalar(date(1994, 1, 1))),
                pc.less(li["l_shipdate"], pa.scalar(date(1995, 1, 1))),
            ),
            pc.and_(
                pc.and_(
                    pc.greater_equal(li["l_discount"], pa.scalar(Decimal("0.05"))),
                    pc.less_equal(li["l_discount"], pa.scalar(Decimal("0.07"))),
                ),
                pc.less(li["l_quantity"], pa.scalar(Decimal("24"))),
            ),
        )
        chosen = li.filter(keep)
        expected = sum(
            p * d
            for p, d in zip(
                chosen["l_extendedprice"].to_pylist(), chosen["l_discount"].to_pylist()
            )
        )
        self.assertEqual(Decimal(revenue), expected)

    def test_tpch_q1_matches_pyarrow(self):
        sql = (ROOT / "testdata" / "tpch" / "queries" / "q1.sql").read_text()
        table = self.query(sql)
        li = read_parquet(
            "lineitem", columns=["l_returnflag", "l_linestatus", "l_shipdate", "l_quantity"]
        )
        li = li.filter(pc.less_equal(li["l_shipdate"], pa.scalar(date(1998, 9, 2))))
        grouped = li.group_by(["l_returnflag", "l_linestatus"]).aggregate(
            [("l_quantity", "sum"), ("l_quantity", "count")]
        )
        expected = sorted(
            zip(
                grouped["l_returnflag"].to_pylist(),
                grouped["l_linestatus"].to_pylist(),
                grouped["l_quantity_sum"].to_pylist(),
                grouped["l_quantity_count"].to_pylist(),
            )
        )
        actual = list(
            zip(
                table["l_returnflag"].to_pylist(),
                table["l_linestatus"].to_pylist(),
                table["sum_qty"].to_pylist(),
                table["count_order"].to_pylist(),
            )
        )
        self.assertEqual(actual, expected)

    def test_parameters(self):
        nation = read_parquet("nation")
        for key in (3, 17):
            expected = nation.filter(pc.equal(nation["n_nationkey"], key))["n_name"].to_pylist()
            for sql in (
                "SELECT n_name FROM nation WHERE n_nationkey = ?",
                "SELECT n_name FROM nation WHERE n_nationkey = $1",
            ):
                table = self.query(sql, parameters=(key,))
                self.assertEqual(table.column("n_name").to_pylist(), expected, sql)

    def test_empty_result_keeps_its_schema(self):
        table = self.query("SELECT * FROM nation WHERE n_nationkey < 0")
        self.assertEqual(table.num_rows, 0)
        self.assertEqual(table.schema.names, pq.read_schema(next((TPCH / "nation").glob("*.parquet"))).names)

    def test_updates_through_execute_update(self):
        with self.conn.cursor() as cur:
            cur.adbc_statement.set_sql_query(
                "CREATE VIEW asian_nations AS SELECT n_name FROM nation "
                "JOIN region ON n_regionkey = r_regionkey WHERE r_name = 'ASIA'"
            )
            self.assertEqual(cur.adbc_statement.execute_update(), 0)
        self.assertEqual(self.query("SELECT count(*) AS n FROM asian_nations")["n"].to_pylist(), [5])
        with self.conn.cursor() as cur:
            cur.adbc_statement.set_sql_query("DROP VIEW asian_nations")
            cur.adbc_statement.execute_update()
        with self.assertRaises(Exception):
            self.query("SELECT * FROM asian_nations")

    def test_each_connection_has_its_own_settings(self):
        """Two ADBC connections: a SET in one changes that connection's answers only, and a
        setting Quiver keeps off cannot be turned on."""
        first, second = login(self.uri), login(self.uri)
        try:
            with first.cursor() as cur:
                cur.execute("SET datafusion.sql_parser.enable_ident_normalization = false")
                cur.execute("SELECT 1 AS MixedCase")
                self.assertEqual(cur.fetch_arrow_table().column_names, ["MixedCase"])
            with second.cursor() as cur:
                cur.execute("SELECT 1 AS MixedCase")
                self.assertEqual(cur.fetch_arrow_table().column_names, ["mixedcase"])
            with first.cursor() as cur:
                with self.assertRaisesRegex(Exception, "stays false"):
                    cur.execute("SET datafusion.execution.enable_file_stream_work_stealing = true")
        finally:
            first.close()
            second.close()

    def test_get_objects_and_table_schema(self):
        objects = self.conn.adbc_get_objects(
            depth="all", db_schema_filter="public", table_name_filter="nation"
        ).read_all().to_pylist()
        tables = [
            table
            for catalog in objects
            for schema in catalog["catalog_db_schemas"] or []
            for table in schema["db_schema_tables"] or []
        ]
        self.assertEqual([t["table_name"] for t in tables], ["nation"])
        self.assertEqual(tables[0]["table_type"], "BASE TABLE")
        expected = pq.read_schema(next((TPCH / "nation").glob("*.parquet"))).names
        self.assertEqual([c["column_name"] for c in tables[0]["table_columns"]], expected)
        schema = self.conn.adbc_get_table_schema("nation")
        self.assertEqual(schema.names, expected)
        self.assertIn("VIEW", self.conn.adbc_get_table_types())
        self.assertIn("BASE TABLE", self.conn.adbc_get_table_types())

    def test_get_info(self):
        info = self.conn.adbc_get_info()
        self.assertEqual(info["vendor_name"], "Quiver")
        self.assertTrue(info["vendor_version"])

    def test_wrong_or_missing_password_is_refused(self):
        with self.assertRaises(Exception) as caught:
            with login(self.uri, password="guess") as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetch_arrow_table()
        self.assertIn("invalid user name or password", str(caught.exception))
        with self.assertRaises(Exception) as caught:
            with flightsql.connect(self.uri) as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetch_arrow_table()
        self.assertIn("UNAUTHENTICATED", str(caught.exception).upper())

    def test_cancelled_long_query_stops_everywhere(self):
        outcome = {}

        def run(cur):
            try:
                cur.execute(LONG_QUERY)
                outcome["table"] = cur.fetch_arrow_table()
            except Exception as error:  # the cancellation surfaces here
                outcome["error"] = error

        with login(self.uri) as conn, conn.cursor() as cur:
            worker = threading.Thread(target=run, args=(cur,))
            worker.start()
            # Wait until the query's tasks are running on the executors.
            deadline = time.monotonic() + 20
            while self.running_tasks() == 0:
                self.assertLess(time.monotonic(), deadline, "the long query never started")
                time.sleep(0.05)
            cur.adbc_cancel()
            worker.join(timeout=20)
            self.assertFalse(worker.is_alive(), "execute did not return after cancel")
        self.assertIn("error", outcome, "the query finished instead of being cancelled")
        self.assertRegex(str(outcome["error"]).lower(), "cancel")
        deadline = time.monotonic() + 2
        while self.running_tasks() > 0:
            self.assertLess(time.monotonic(), deadline, "tasks still running after cancel")
            time.sleep(0.05)
        self.assertEqual(self.query("SELECT 5 AS five")["five"].to_pylist(), [5])

    def running_tasks(self):
        table = self.query("SELECT sum(running_tasks) AS busy FROM system.executors")
        return table["busy"].to_pylist()[0] or 0

    def test_bad_sql_is_an_error_naming_the_cause(self):
        with self.assertRaises(Exception) as caught:
            self.query("SELECT * FROM no_such_table")
        self.assertIn("no_such_table", str(caught.exception))
        with self.assertRaises(Exception) as caught:
            self.query("SELEC 1")
        self.assertIn("INVALID_ARGUMENT", str(caught.exception).upper())
        self.assertEqual(self.query("SELECT 2 AS two").column("two").to_pylist(), [2])

    def test_readme_snippet(self):
        readme = (ROOT / "README.md").read_text()
        section = readme.split("## Use from Python", 1)[1]
        snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
        self.assertIn("grpc://127.0.0.1:50050", snippet)
        snippet = snippet.replace("grpc://127.0.0.1:50050", self.uri)
        namespace = {}
        exec(compile(snippet, "README.md", "exec"), namespace)
        nation = read_parquet("nation")
        expected = nation.filter(pc.equal(nation["n_nationkey"], 7))["n_name"].to_pylist()
        self.assertEqual(namespace["table"].column("n_name").to_pylist(), expected)


if __name__ == "__main__":
    unittest.main()
