"""The pipeline that produces calibration tables: generate candidates, score proxies and truth.

Heavy dependencies (``torch``, ``sentence-transformers``, ``transformers``) are imported lazily,
inside the functions that need them; install them with ``pip install hedgetune[pipeline]``.
"""
