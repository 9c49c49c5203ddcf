"""Install as a Dagster asset graph: plain stage functions (``steps``) and thin assets.

Importing this package is cheap; Dagster is imported only by ``definitions``/``install``.
"""
