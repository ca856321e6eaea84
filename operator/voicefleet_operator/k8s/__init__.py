"""A thin async layer over the Kubernetes API: connection, errors, discovery, idempotent apply."""
