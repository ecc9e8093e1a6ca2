"""Job execution: the step engine and one handler per job kind."""
