from tests.reports.smtp import smtp, tls_smtp

__all__ = ["smtp", "tls_smtp"]
