"""Serving: batch scoring in Spark (`batch`, `predict`) and where it writes (`scored`)."""
