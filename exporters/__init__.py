"""Exporters: pure, streaming writers (CSV, ZIP, datapackage.json) that write to a byte sink
they are handed. They know neither S3, the database nor Prefect."""
