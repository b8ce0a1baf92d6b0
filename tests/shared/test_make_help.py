"""`make help` lists every target and every variable a user sets, one line each."""

from __future__ import annotations

import re

from continuous_training.config import PROJECT_ROOT
from make_runs import make


def test_make_help_lists_every_phony_target_and_every_user_variable_with_a_line_each():
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    done = make("help")
    assert done.returncode == 0, done.stderr
    targets = dict(re.findall(r"^  make (\S+) +(.+)$", done.stdout, re.MULTILINE))
    variables = dict(re.findall(r"^  ([A-Z_]+) +(.+)$", done.stdout, re.MULTILINE))

    phony = re.search(r"^\.PHONY: (.+)$", makefile, re.MULTILINE).group(1).split()
    assert sorted(targets) == sorted(phony)
    assert set(re.findall(r"^([A-Z_]+) \?=", makefile, re.MULTILINE)) | {"DRY_RUN"} == set(variables)
    assert all(len(line) > 10 for line in [*targets.values(), *variables.values()])
