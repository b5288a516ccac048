"""An executor under `--memory-limit 64MiB` shuffles about 1 GiB: the query must answer
right, and the executor's peak resident memory (VmHWM) shows what the limit bounds.

Starts a scheduler and one executor (QUIVER_BIN, default the debug build; one slot, so
the consumer's sort has the limit to itself) and
runs, through ADBC, a query whose first stage writes ROWS rows (192 hex digits from six
hashes each; default 5 million: about 1.1 GiB of row data) into the shuffle, compressed as
SHUFFLE_COMPRESSION says (none, lz4 or zstd), and whose second stage reads them all back (a window partitioned by a key, summed over). Prints the answer, the time, the
executor's peak RSS, the bytes it spilled (from its /metrics) and the most its spill
files took on disk.

    QUIVER_BIN=$CARGO_TARGET_DIR/debug/quiver .venv/bin/python benches/python/bounded_shuffle.py
"""

import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "client" / "tests" / "python"))
from ports import free_port, wait_for_port  # noqa: E402

ROWS = int(os.environ.get("ROWS", "5000000"))
LIMIT = int(os.environ.get("MEMORY_LIMIT", str(64 << 20)))
COMPRESSION = os.environ.get("SHUFFLE_COMPRESSION", "lz4")
# 192 hex digits a row from six different hashes: about as compressible as text.
PAD = "concat(" + ", ".join(f"md5(CAST(value + {i} AS VARCHAR))" for i in range(6)) + ")"
PAD_BYTES = 6 * 32


def query(rows):
    return f"""
SELECT count(*) AS rows_read, sum(length(pad)) AS pad_bytes, max(r) AS longest_run FROM (
  SELECT pad, row_number() OVER (PARTITION BY k ORDER BY v) AS r FROM (
    SELECT value % 1000 AS k, value AS v, {PAD} AS pad
    FROM generate_series(1, {rows})))
"""


def disk_usage(directory):
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def rss_bytes(pid, field="VmHWM"):
    """The process's peak (VmHWM) or current (VmRSS) resident memory."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


def peak_rss_bytes(pid):
    return rss_bytes(pid, "VmHWM")


def metric(port, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    return None


def run(binary, rows=ROWS, limit=LIMIT, compression=COMPRESSION):
    """Runs the query on a fresh scheduler and executor; asserts its answer and returns
    the figures: seconds, spilled (bytes, Arrow), on_disk (most bytes of files), and the
    executor's idle, peak and after (2 s after the query) resident bytes."""
    port, http = free_port(), free_port()
    env = dict(os.environ, QUIVER_EPHEMERAL="true")
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    scheduler = subprocess.Popen(
        [binary, "scheduler", "--bind", f"127.0.0.1:{port}", "--target-partitions", "2"], **quiet
    )
    work_dir = tempfile.mkdtemp()
    executor = subprocess.Popen(
        [binary, "executor", "--scheduler", f"http://127.0.0.1:{port}", "--slots", "1",
         "--memory-limit", str(limit), "--http", f"127.0.0.1:{http}",
         "--shuffle-compression", compression, "--work-dir", work_dir],
        **quiet,
    )
    most_on_disk = [0]
    running = [True]

    def watch_disk():
        while running[0]:
            most_on_disk[0] = max(most_on_disk[0], disk_usage(work_dir))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_disk, daemon=True)
    watcher.start()
    try:
        wait_for_port(port)
        wait_for_port(http)
        idle = peak_rss_bytes(executor.pid)
        started = time.monotonic()
        with flightsql.connect(f"grpc://127.0.0.1:{port}") as conn, conn.cursor() as cur:
            # Sorts keep 1 MiB (not 10) back for merging their spill files, and batches
            # of 1,024 rows let a sort's share of 64 MiB take one more batch.
            for setting in ("sort_spill_reservation_bytes = 1048576", "batch_size = 1024"):
                cur.execute(f"SET datafusion.execution.{setting}")
                cur.fetch_arrow_table()
            cur.execute(query(rows))
            answer = cur.fetch_arrow_table().to_pylist()[0]
        seconds = time.monotonic() - started
        expected = {"rows_read": rows, "pad_bytes": rows * PAD_BYTES, "longest_run": rows // 1000}
        assert answer == expected, (answer, expected)
        spilled = metric(http, "quiver_executor_shuffle_spilled_bytes_total")
        peak = peak_rss_bytes(executor.pid)
        # The result was read to the end, so the query's data is gone: what stays?
        time.sleep(2)
        after = rss_bytes(executor.pid, "VmRSS")
        return {"seconds": seconds, "spilled": spilled, "on_disk": most_on_disk[0],
                "idle": idle, "peak": peak, "after": after}
    finally:
        running[0] = False
        watcher.join()
        for process in (executor, scheduler):
            process.kill()
            process.wait()


def main():
    binary = os.environ.get("QUIVER_BIN", "target/debug/quiver")
    figures = run(binary)
    mib = lambda n: f"{n / 2**20:.0f} MiB"  # noqa: E731
    print(f"rows {ROWS}, memory limit {LIMIT >> 20} MiB, shuffle compression {COMPRESSION}: "
          f"answer right in {figures['seconds']:.1f} s")
    print(f"shuffle spilled {figures['spilled'] / 2**30:.2f} GiB (Arrow, in memory); at most "
          f"{figures['on_disk'] / 2**30:.2f} GiB on disk; executor peak RSS "
          f"{mib(figures['peak'])} (at start {mib(figures['idle'])}, 2 s after "
          f"{mib(figures['after'])})")


if __name__ == "__main__":
    main()
