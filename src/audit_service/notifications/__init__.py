"""Outbound messages: e-mail through the configured SMTP server."""
