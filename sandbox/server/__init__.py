"""The sandbox HTTPS server: routes, handlers, sessions, faults."""
