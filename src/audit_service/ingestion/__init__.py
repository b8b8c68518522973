"""Events posted by other services: `/events`, `/events/batch`, per-action metadata schemas,
and the client library those services use (`audit_service.client`)."""
