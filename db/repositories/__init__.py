"""All SQL lives here: one module per table group. Callers flush; transactions commit outside."""
