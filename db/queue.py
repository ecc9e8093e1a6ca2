"""Names shared by the API (which enqueues) and the workers (which consume)."""

RUN_JOB_TASK = "serveplane.run_job"
DELIVER_WEBHOOK_TASK = "serveplane.deliver_webhook"
JOBS_QUEUE = "serveplane.jobs"
WEBHOOKS_QUEUE = "serveplane.webhooks"
