"""Shipped models and their model cards (read with importlib.resources)."""
