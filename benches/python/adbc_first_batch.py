"""Time to the first batch of a large result through ADBC (Python), and to its last row.

Called by `quiver-benches first-batch` with a running cluster's URL, a run count and the
statement; connects once, and for each run executes the statement and reads its result
as a stream of record batches (`fetch_record_batch`), printing one line per run: the
milliseconds to the first batch with rows, to the last row, and the rows read.

    .venv/bin/python benches/python/adbc_first_batch.py grpc://127.0.0.1:50050 3 "SELECT * FROM lineitem"
"""

import sys
import time

import adbc_driver_flightsql.dbapi as flightsql


def main():
    url, runs, sql = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with flightsql.connect(url) as conn:
        for _ in range(runs):
            started = time.perf_counter()
            first = None
            rows = 0
            with conn.cursor() as cur:
                cur.execute(sql)
                for batch in cur.fetch_record_batch():
                    if first is None and batch.num_rows > 0:
                        first = time.perf_counter() - started
                    rows += batch.num_rows
            done = time.perf_counter() - started
            first = done if first is None else first
            print(f"{first * 1e3:.3f} {done * 1e3:.3f} {rows}", flush=True)


if __name__ == "__main__":
    main()
