"""Running the method: the Explainer (prefix + suffix sessions), the fused graph and its runner."""
