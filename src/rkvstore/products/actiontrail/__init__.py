"""ActionTrail (2020-07-06): the audit trail looked up (issue 14; README "Audit trail")."""
