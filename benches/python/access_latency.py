"""What access control costs a small query, as a Python user sees it through ADBC.

Starts a scheduler (QUIVER_BIN, default the debug build) whose administrator is root,
with bob granted SELECT on nation, plus one executor; then times the same small query
for root (no grant checks), bob (hidden-table catalog, privilege checks), and on a
second scheduler without logins. Prints the median and p90 of each, and the ratios.

    QUIVER_BIN=$CARGO_TARGET_DIR/debug/quiver .venv/bin/python benches/python/access_latency.py
"""

import os
import socket
import statistics
import subprocess
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql

ROOT = Path(__file__).resolve().parents[2]
NATION = ROOT / "testdata" / "tpch" / "sf0.01" / "nation"
QUERY = "SELECT count(*) FROM nation WHERE n_regionkey = 1"
RUNS = int(os.environ.get("RUNS", "300"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(binary, extra):
    port = free_port()
    env = dict(os.environ, QUIVER_EPHEMERAL="true", QUIVER_CLUSTER_SECRET="bench")
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    processes = [
        subprocess.Popen([binary, "scheduler", "--bind", f"127.0.0.1:{port}"] + extra, **quiet),
        subprocess.Popen(
            [binary, "executor", "--scheduler", f"http://127.0.0.1:{port}", "--slots", "2"],
            **quiet,
        ),
    ]
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return f"grpc://127.0.0.1:{port}", processes
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def connect(uri, user=None, password=None):
    kwargs = {"username": user, "password": password} if user else {}
    return flightsql.connect(uri, db_kwargs=kwargs)


def run(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def timings(conn):
    for _ in range(20):
        run(conn, QUERY)
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter()
        run(conn, QUERY)
        samples.append((time.perf_counter() - started) * 1e3)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.9)]


def main():
    binary = os.environ.get(
        "QUIVER_BIN",
        str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug" / "quiver"),
    )
    create = f"CREATE EXTERNAL TABLE nation STORED AS PARQUET LOCATION '{NATION}/'"
    governed_uri, governed = start(
        binary, ["--user", "root:rooted", "--user", "bob:bravo", "--admin", "root"]
    )
    open_uri, open_cluster = start(binary, [])
    try:
        root = connect(governed_uri, "root", "rooted")
        run(root, create)
        run(root, "GRANT SELECT ON TABLE nation TO bob")
        bob = connect(governed_uri, "bob", "bravo")
        anyone = connect(open_uri)
        run(anyone, create)
        results = {
            "no logins": timings(anyone),
            "administrator": timings(root),
            "user under grants": timings(bob),
        }
        base = results["no logins"][0]
        for name, (median, p90) in results.items():
            print(f"{name:>18}: median {median:6.2f} ms  p90 {p90:6.2f} ms  ({median / base:.2f}x)")
    finally:
        for process in governed + open_cluster:
            process.kill()
            process.wait()


if __name__ == "__main__":
    main()
