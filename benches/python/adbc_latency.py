"""Round trips through ADBC (Python), as a notebook or dashboard makes them.

Called by `quiver-benches latency` with a running cluster's URL, a run count and the
statements; connects once, runs each statement 10 times to warm up and then RUNS times
(`cursor.execute` and `fetch_arrow_table`, what DB-API users write), and prints one line
per statement: its p50 and p99 in milliseconds.

    .venv/bin/python benches/python/adbc_latency.py grpc://127.0.0.1:50050 200 "SELECT 1"
"""

import sys
import time

import adbc_driver_flightsql.dbapi as flightsql


def percentile(sorted_ms, fraction):
    return sorted_ms[round((len(sorted_ms) - 1) * fraction)]


def main():
    url, runs, statements = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    with flightsql.connect(url) as conn:
        for sql in statements:
            times = []
            for run in range(10 + runs):
                started = time.perf_counter()
                with conn.cursor() as cur:
                    cur.execute(sql)
                    cur.fetch_arrow_table()
                if run >= 10:
                    times.append((time.perf_counter() - started) * 1e3)
            times.sort()
            print(f"{percentile(times, 0.5):.3f} {percentile(times, 0.99):.3f}", flush=True)


if __name__ == "__main__":
    main()
