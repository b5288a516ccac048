-- The TPC-H tables of testdata/, with paths relative to the repository root.
CREATE EXTERNAL TABLE IF NOT EXISTS nation STORED AS PARQUET LOCATION 'testdata/tpch/sf0.01/nation/';
CREATE EXTERNAL TABLE IF NOT EXISTS region STORED AS PARQUET LOCATION 'testdata/tpch/sf0.01/region/';
CREATE EXTERNAL TABLE IF NOT EXISTS part STORED AS PARQUET LOCATION 'testdata/tpch/sf0.01/part/';
CREATE EXTERNAL TABLE IF NOT EXISTS supplier STORED AS PARQUET LOCATION 'testdata/tpch/sf0.01/supplier/';
CREATE EXTERNAL TABLE IF NOT EXISTS partsupp STORED AS PARQUET LOCATION 'testdata/tpch/sf0.01/partsupp/';
CREATE EXTERNAL TABLE IF NOT EXISTS customer STORED AS PARQUET LOCATION 'testdata/tpch/sf0.01/customer/';
CREATE EXTERNAL TABLE IF NOT EXISTS orders STORED AS PARQUET LOCATION 'testdata/tpch/sf0.01/orders/';
CREATE EXTERNAL TABLE IF NOT EXISTS lineitem STORED AS PARQUET LOCATION 'testdata/tpch/sf0.01/lineitem/';
