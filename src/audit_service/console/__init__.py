"""The admin console: server-rendered pages over the same services the API uses (floor 6)."""
