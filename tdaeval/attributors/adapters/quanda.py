"""Adapter for quanda (being written)."""
