"""Graph analysis and surgery: find transformer blocks, split at a block."""
