"""rkvstore: a self-hosted control plane for Redis accounts (R-kvstore OpenAPI 2015-01-01)."""
