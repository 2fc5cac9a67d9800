"""The model: Keras layers by name, checks against Keras' catalogue, building, loading."""
