"""Data stages of recsys-stream: each one a function from files to files.

Stages: ``synth`` (synthetic catalogs), ``parse`` (metadata to Parquet),
``pairs`` (weighted product pairs and vocabulary), ``split`` (train/validation).
"""
