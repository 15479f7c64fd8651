"""What the gateway records about each request: the decision log, traces and metrics."""
