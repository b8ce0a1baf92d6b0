"""Running the project's make targets from tests, and the line a failed one ends with."""

from __future__ import annotations

import os
import re
import subprocess

from continuous_training.config import PROJECT_ROOT

MAKE_ERROR = re.compile(r"make(\[\d+\])?: \*\*\* ")  # make's own closing line; `make[1]` under a parent make


def make(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`make --silent args…` in the project, with `env` added to the environment."""
    return subprocess.run(["make", "--silent", "--no-print-directory", *args], cwd=PROJECT_ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=300)


def last_error_line(stderr: str) -> str:
    """The last line of a failed target's stderr before make's own `*** … Error` line."""
    return [line for line in stderr.splitlines() if line.strip() and not MAKE_ERROR.match(line)][-1]
