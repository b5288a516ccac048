"""Generates TPC-DS data and its 99 queries for the differential test, with DuckDB's tpcds
extension (both from PyPI, installed in .venv by scripts/python-env.sh):

    .venv/bin/python scripts/gen-tpcds.py [SF]      # default 0.01

writes testdata/tpcds/sf<SF>/<table>/part-0.parquet for the 24 tables and
testdata/tpcds/queries/q<N>.sql for the 99 queries. Nothing of it is committed; a run
whose output is already there does nothing.
"""

import glob
import os
import sys
from pathlib import Path

import duckdb
import duckdb_extension_tpcds

ROOT = Path(__file__).resolve().parents[1]
scale = sys.argv[1] if len(sys.argv) > 1 else "0.01"
data = ROOT / "testdata" / "tpcds" / f"sf{scale}"
queries = ROOT / "testdata" / "tpcds" / "queries"
done = data / ".complete"
if done.exists() and len(list(queries.glob("q*.sql"))) == 99:
    sys.exit(0)

extension = glob.glob(
    os.path.join(os.path.dirname(duckdb_extension_tpcds.__file__), "extensions", "*",
                 "tpcds.duckdb_extension")
)[0]
db = duckdb.connect(config={"allow_unsigned_extensions": True})
db.execute(f"LOAD '{extension}'")
db.execute(f"CALL dsdgen(sf={float(scale)})")
tables = [row[0] for row in db.execute("SHOW TABLES").fetchall()]
for table in tables:
    target = data / table
    target.mkdir(parents=True, exist_ok=True)
    db.execute(
        f"COPY {table} TO '{target / 'part-0.parquet'}' (FORMAT parquet, ROW_GROUP_SIZE 4096)"
    )
queries.mkdir(parents=True, exist_ok=True)
for number, text in db.execute("SELECT query_nr, query FROM tpcds_queries()").fetchall():
    (queries / f"q{number}.sql").write_text(text)
done.write_text(f"{len(tables)} tables\n")
print(f"TPC-DS sf{scale}: {len(tables)} tables in {data}, 99 queries in {queries}")
