"""RAM (2015-05-01): users, groups, policies and AccessKeys of a tenant."""
