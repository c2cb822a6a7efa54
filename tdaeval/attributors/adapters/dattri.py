"""Adapter for dattri (being written)."""
