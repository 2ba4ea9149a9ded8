"""Sources: the platform database as Arrow record batches from one consistent snapshot, and
uploaded documents as byte streams. Knows neither exporters, storage nor Prefect."""
