"""ActionTrail (2020-07-06): the audit trail's events, looked up (issue 14, docs/audit.md)."""
