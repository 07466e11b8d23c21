"""A local cluster of the built images on the Docker engine (``lockstep up`` / ``down``)."""
