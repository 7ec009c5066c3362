"""Reading a ViT graph: LayerNorms, transformer blocks, and the facts the method needs."""
