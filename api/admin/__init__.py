"""Admin: see what failed across customers and retry it (API, web page, CLI)."""
