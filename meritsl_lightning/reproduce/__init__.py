"""Reproducing a results table: a table spec (which configs, how runs chain, which rows and paper values)
and an engine that runs it (subprocess runs, resume, parallel slots, aggregation, md/csv/json/png).

Nothing here imports torch or Lightning: every run is a ``meritsl fit`` subprocess.
"""
