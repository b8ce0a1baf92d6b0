"""Data stages: ingest, validate, stats (and its report), featurize; the demo data generator."""
