"""serveplane workers: Celery tasks, job handlers and runtime drivers."""
