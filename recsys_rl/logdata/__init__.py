"""Logged data: the Parquet event schema, column mappings, table checks, the importer, slot-level logs."""
