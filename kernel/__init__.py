"""The leaf kernel: what every layer shares (errors, ids, settings, shared contracts).

It imports nothing of the project, so sources, exporters, storage, billing and flows can all
depend on it without depending on each other (checked by import-linter in ``make lint``).
"""
