"""Helpers shared by several test modules (real local servers and the like)."""
