"""Delta Lake tables shared with delta-rs's Python package (`deltalake`): a table written
by `deltalake` (three versions, partitioned, with a checkpoint) is read by Quiver through ADBC, including an
older version; a table Quiver creates and appends to (and overwrites) is read by
`deltalake`, at each version. Answers are compared row for row.
"""

import os
import subprocess
import tempfile
import unittest
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from ports import free_port, wait_for_port


def rows(table, columns):
    """A table's rows as sorted tuples of the named columns."""
    data = table.select(columns).to_pylist()
    return sorted(tuple(row[c] for c in columns) for row in data)


class DeltaInterop(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        binary = os.environ["QUIVER_BIN"]
        port = free_port()
        env = dict(os.environ, QUIVER_EPHEMERAL="true")
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        cls.processes = [
            subprocess.Popen(
                [binary, "scheduler", "--bind", f"127.0.0.1:{port}", "--target-partitions", "4"],
                **quiet,
            )
        ]
        for _ in range(2):
            cls.processes.append(
                subprocess.Popen(
                    [binary, "executor", "--scheduler", f"http://127.0.0.1:{port}", "--slots", "2"],
                    **quiet,
                )
            )
        wait_for_port(port)
        cls.conn = flightsql.connect(f"grpc://127.0.0.1:{port}")
        cls.dir = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.conn.close()
        for process in cls.processes:
            process.kill()
            process.wait()
        cls.dir.cleanup()

    def query(self, sql):
        with self.conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table()

    def test_quiver_reads_what_deltalake_wrote(self):
        path = Path(self.dir.name) / "from_deltalake"
        first = pa.table(
            {
                "id": pa.array([1, 2, 3], pa.int64()),
                "city": ["Oslo", "Lima", "Oslo"],
                "amount": pa.array([1.5, 2.5, 3.5], pa.float64()),
            }
        )
        second = pa.table(
            {
                "id": pa.array([4, 5], pa.int64()),
                "city": ["Pune", "Lima"],
                "amount": pa.array([4.5, 5.5], pa.float64()),
            }
        )
        write_deltalake(str(path), first, partition_by=["city"])
        write_deltalake(str(path), second, mode="append")
        # A checkpoint at version 1, then one more commit: Quiver replays the Parquet
        # checkpoint and the JSON commit after it.
        DeltaTable(str(path)).create_checkpoint()
        self.assertTrue((path / "_delta_log" / "00000000000000000001.checkpoint.parquet").exists())
        write_deltalake(str(path), second.slice(0, 1), mode="append")
        self.query(f"CREATE EXTERNAL TABLE dl STORED AS DELTA LOCATION '{path}'")
        self.query(
            f"CREATE EXTERNAL TABLE dl_v0 STORED AS DELTA LOCATION '{path}' OPTIONS ('version' '0')"
        )
        columns = ["id", "city", "amount"]
        expected = rows(DeltaTable(str(path)).to_pyarrow_table(), columns)
        self.assertEqual(len(expected), 6)
        self.assertEqual(rows(self.query("SELECT * FROM dl"), columns), expected)
        self.assertEqual(
            rows(self.query("SELECT * FROM dl_v0"), columns),
            rows(DeltaTable(str(path), version=0).to_pyarrow_table(), columns),
        )
        # A filter on the partition column agrees too.
        lima = self.query("SELECT id FROM dl WHERE city = 'Lima' ORDER BY id")
        self.assertEqual(lima.column("id").to_pylist(), [2, 5])
        pune = self.query("SELECT count(*) AS n FROM dl WHERE city = 'Pune'")
        self.assertEqual(pune.column("n").to_pylist(), [2])

    def test_deltalake_reads_what_quiver_wrote(self):
        path = Path(self.dir.name) / "from_quiver"
        self.query(
            "CREATE EXTERNAL TABLE q (id BIGINT, name VARCHAR, day DATE, price DECIMAL(10,2)) "
            f"STORED AS DELTA PARTITIONED BY (day) LOCATION '{path}'"
        )
        self.query(
            "INSERT INTO q SELECT value, 'n' || CAST(value AS VARCHAR), "
            "DATE '2026-01-01' + CAST(value % 3 AS INT), CAST(value AS DECIMAL(10,2)) / 4 "
            "FROM generate_series(1, 50)"
        )
        self.query("INSERT INTO q VALUES (100, 'last', DATE '2026-02-01', 9.99)")
        columns = ["id", "name", "day", "price"]
        table = DeltaTable(str(path))
        self.assertEqual(table.version(), 2)
        self.assertEqual(
            rows(table.to_pyarrow_table(), columns),
            rows(self.query("SELECT id, name, day, price FROM q"), columns),
        )
        self.assertEqual(len(DeltaTable(str(path), version=1).to_pyarrow_table()), 50)
        self.query("INSERT OVERWRITE q VALUES (7, 'only', DATE '2026-03-01', 1.00)")
        after = DeltaTable(str(path)).to_pyarrow_table()
        self.assertEqual(after.column("id").to_pylist(), [7])
        # Quiver's history and deltalake's agree on the operations.
        history = [h["operation"] for h in DeltaTable(str(path)).history()]
        self.assertEqual(history, ["WRITE", "WRITE", "WRITE", "CREATE TABLE"])

    def test_deltalake_reads_a_table_quiver_created_from_a_query(self):
        path = Path(self.dir.name) / "ctas"
        self.query(
            f"CREATE TABLE ctas STORED AS DELTA PARTITIONED BY (bucket) LOCATION '{path}' AS "
            "SELECT value AS id, value % 4 AS bucket, 'v' || CAST(value AS VARCHAR) AS label "
            "FROM generate_series(1, 200)"
        )
        table = DeltaTable(str(path))
        # The table and its rows are one commit.
        self.assertEqual(table.version(), 0)
        self.assertEqual(table.metadata().partition_columns, ["bucket"])
        columns = ["id", "bucket", "label"]
        self.assertEqual(
            rows(table.to_pyarrow_table(), columns),
            rows(self.query("SELECT id, bucket, label FROM ctas"), columns),
        )
        self.assertEqual(len(table.to_pyarrow_table()), 200)
        self.assertEqual(
            [h["operation"] for h in table.history()], ["CREATE TABLE AS SELECT"]
        )


if __name__ == "__main__":
    unittest.main()
