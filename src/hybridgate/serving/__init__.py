"""Serving HTTP with several worker processes: the supervisor, each worker, and how their metrics meet."""
