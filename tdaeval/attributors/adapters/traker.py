"""Adapter for traker (being written)."""
