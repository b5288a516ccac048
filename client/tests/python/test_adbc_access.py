"""Grants as a Python user meets them through ADBC (adbc-driver-flightsql + pyarrow).

Starts a real scheduler (the `quiver` binary named by QUIVER_BIN) with an administrator,
root, and a user, bob, plus one executor. Bob sees no table until root grants it: not in
queries, not in ADBC's catalog metadata. Answers are checked against pyarrow over the
same files.
"""

import os
import subprocess
import unittest
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.parquet as pq

from ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[3]
NATION = ROOT / "testdata" / "tpch" / "sf0.01" / "nation"


class GrantsOverAdbc(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        binary = os.environ["QUIVER_BIN"]
        port = free_port()
        cls.uri = f"grpc://127.0.0.1:{port}"
        env = dict(os.environ, QUIVER_CLUSTER_SECRET="python-test-secret", QUIVER_EPHEMERAL="true")
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        cls.processes = [
            subprocess.Popen(
                [binary, "scheduler", "--bind", f"127.0.0.1:{port}", "--target-partitions", "2",
                 "--user", "root:rooted", "--user", "bob:bravo", "--admin", "root"],
                **quiet,
            ),
            subprocess.Popen(
                [binary, "executor", "--scheduler", f"http://127.0.0.1:{port}", "--slots", "2"],
                **quiet,
            ),
        ]
        wait_for_port(port)
        cls.root = cls.connect("root", "rooted")
        cls.bob = cls.connect("bob", "bravo")
        cls.sql(cls.root, f"CREATE EXTERNAL TABLE nation STORED AS PARQUET LOCATION '{NATION}/'")

    @classmethod
    def tearDownClass(cls):
        cls.root.close()
        cls.bob.close()
        for process in cls.processes:
            process.kill()
            process.wait()

    @classmethod
    def connect(cls, user, password):
        return flightsql.connect(cls.uri, db_kwargs={"username": user, "password": password})

    @staticmethod
    def sql(conn, text):
        with conn.cursor() as cur:
            cur.execute(text)
            return cur.fetch_arrow_table()

    def tables_seen_by(self, conn):
        objects = conn.adbc_get_objects(depth="tables", db_schema_filter="public").read_all()
        return sorted(
            table["table_name"]
            for catalog in objects.to_pylist()
            for schema in catalog["catalog_db_schemas"] or []
            for table in schema["db_schema_tables"] or []
        )

    def test_a_table_is_hidden_until_granted_and_read_only_when_granted_select(self):
        self.assertEqual(self.tables_seen_by(self.root), ["nation"])
        self.assertEqual(self.tables_seen_by(self.bob), [])
        with self.assertRaises(Exception) as hidden:
            self.sql(self.bob, "SELECT count(*) FROM nation")
        self.assertIn("not found", str(hidden.exception))

        self.sql(self.root, "GRANT SELECT ON TABLE nation TO bob")
        try:
            self.assertEqual(self.tables_seen_by(self.bob), ["nation"])
            names = self.sql(self.bob, "SELECT n_name FROM nation").column(0).to_pylist()
            expected = pq.read_table(NATION, columns=["n_name"]).column(0).to_pylist()
            self.assertEqual(sorted(names), sorted(expected))
            with self.assertRaises(Exception) as refused:
                self.sql(self.bob, "INSERT INTO nation SELECT * FROM nation")
            self.assertIn("INSERT privilege", str(refused.exception))
        finally:
            self.sql(self.root, "REVOKE SELECT ON TABLE nation FROM bob")
        self.assertEqual(self.tables_seen_by(self.bob), [])


if __name__ == "__main__":
    unittest.main()
