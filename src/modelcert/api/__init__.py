"""The HTTP API: `create_app()` builds it; every route but the health check needs an
API key (`Authorization: Bearer mc_…`) with a high enough role."""
