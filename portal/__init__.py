"""The client self-service portal: a web page and HTTP API for a tenant's authorised contacts."""
