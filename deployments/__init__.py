"""Deployments: the flows on a Prefect work pool, operated from the UI.

``definitions`` declares every deployment once; ``serve`` (``make serve``) runs a local server,
the deployments, the alerts and a worker; ``worker`` (``make worker``) adds a worker;
``deploy`` puts deployments and alerts on a production server; ``automations`` declares the
alerts; ``monitor`` serves the metrics beside a worker; ``doctor`` checks the configuration.
"""
