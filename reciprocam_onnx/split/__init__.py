"""Splitting a model at a block: the cut, the verification, and the pipeline that runs them."""
