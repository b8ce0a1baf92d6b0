"""Errors a job reports to its user as one clear line (no stack trace needed to understand them)."""


class PipelineError(RuntimeError):
    """Bad input or a failed check: the message says what is wrong and where."""
