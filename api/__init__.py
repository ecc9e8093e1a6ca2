"""serveplane HTTP API: resources, auth, the inference gateway, health."""
