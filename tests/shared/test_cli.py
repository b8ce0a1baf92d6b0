"""The argument types the jobs share."""

import argparse

import pytest
from continuous_training.cli import optional


def test_optional_reads_an_unset_airflow_param_as_none():
    parse = optional(int)

    assert parse("512") == 512
    assert parse("None") is None and parse("") is None and parse(" null ") is None
    assert optional(float)("0.7") == 0.7
    with pytest.raises(argparse.ArgumentTypeError, match="expected int or None, got 'big'"):
        parse("big")
