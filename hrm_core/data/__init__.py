"""Market data: sources, tolerant readers, the OHLCV schema and its validation rules."""
