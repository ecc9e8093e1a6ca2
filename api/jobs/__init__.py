"""Jobs: the asynchronous work behind every mutating request."""
