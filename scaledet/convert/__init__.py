"""Readers and converters for weights and data written by other frameworks (no framework needed)."""
