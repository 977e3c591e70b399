"""The limit filter's state kept current: the `sensors` table reread and offered to it (the filter, a stage, is
pipeline/stages/limits.py)."""
