"""The machine under the model: backend start-up, devices, and jobs of several processes."""
