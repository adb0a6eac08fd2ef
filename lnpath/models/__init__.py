"""The model registry: find a shipped or lab model by name, verify its sha256, load it."""
