"""Utilities: cython_bbox (compiled box overlaps; built by `make`)."""
