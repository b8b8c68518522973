from tests.forwarding.rsyslog import rsyslog

__all__ = ["rsyslog"]
