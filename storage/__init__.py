"""Storage: S3 objects (streaming multipart writes, read-back verification, signed links).
Knows neither sources, exporters nor Prefect."""
