-- The TPC-H tables of testdata/, with paths relative to the repository root.
CREATE EXTERNAL TABLE nation STORED AS PARQUET LOCATION 'testdata/tpch/sf0.01/nation/';
CREATE EXTERNAL TABLE region STORED AS PARQUET LOCATION 'testdata/tpch/sf0.01/region/';
CREATE EXTERNAL TABLE part STORED AS PARQUET LOCATION 'testdata/tpch/sf0.01/part/';
CREATE EXTERNAL TABLE supplier STORED AS PARQUET LOCATION 'testdata/tpch/sf0.01/supplier/';
CREATE EXTERNAL TABLE partsupp STORED AS PARQUET LOCATION 'testdata/tpch/sf0.01/partsupp/';
CREATE EXTERNAL TABLE customer STORED AS PARQUET LOCATION 'testdata/tpch/sf0.01/customer/';
CREATE EXTERNAL TABLE orders STORED AS PARQUET LOCATION 'testdata/tpch/sf0.01/orders/';
CREATE EXTERNAL TABLE lineitem STORED AS PARQUET LOCATION 'testdata/tpch/sf0.01/lineitem/';
