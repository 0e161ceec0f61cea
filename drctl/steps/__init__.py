"""The step-type contract, the registry, and the generic step types."""
