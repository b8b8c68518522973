"""The client library moved to the `audit-service-client` distribution (clients/python/),
which this package bundles: `audit_service.client` and this module re-export it."""

from audit_service_client import *  # noqa: F403
from audit_service_client import __all__ as __all__
