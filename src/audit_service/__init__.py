"""audit-service: a trustworthy, queryable record of who did what, from where and when."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("audit-service")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
