"""The prepare stage: a corpus on disk -> one manifest (parquet) in the shared schema."""
