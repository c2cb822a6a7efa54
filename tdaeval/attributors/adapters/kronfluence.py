"""Adapter for kronfluence (being written)."""
