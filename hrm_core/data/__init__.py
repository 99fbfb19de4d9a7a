"""Market data in: sources, tolerant readers, the OHLCV schema, validation with quarantine, and the
warehouse (DuckDB locally, Apache Iceberg in production) with its transactions and versions."""
