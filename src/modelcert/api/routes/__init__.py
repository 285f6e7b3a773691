"""Route modules, one per area; each exposes `router`, included by `create_app()`."""
