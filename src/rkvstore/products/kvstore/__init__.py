"""R-kvstore (2015-01-01): instances, their accounts, settings and surface."""
