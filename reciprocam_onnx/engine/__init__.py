"""Running the method: the Explainer (prefix + suffix sessions), presets of several taps, the fused graph
and its runner, and attention rollout (the white-box baseline)."""
