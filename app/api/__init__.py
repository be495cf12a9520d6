"""REST handlers: parse, call a service, serialise. The routes table is app/api/routes.py."""
