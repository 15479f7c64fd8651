"""What the gateway records about each request: the decision log (and, later, metrics and traces)."""
