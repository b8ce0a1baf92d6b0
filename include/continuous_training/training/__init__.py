"""Distributed training: Horovod ranks inside one Spark barrier stage, fed by Petastorm.

Import the submodules (`barrier`, `loop`, `model`, `candidate`) directly: this package imports nothing itself, so
the served model can load `model` without pyspark or Horovod.
"""
