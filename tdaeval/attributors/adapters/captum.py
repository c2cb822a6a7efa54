"""Adapter for captum (being written)."""
