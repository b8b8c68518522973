"""Maintenance mode: a runtime setting in the database, shared by every replica."""
