"""ViT-ReciproCAM's masked copies: their weights, their slot tables, and how they are built."""
