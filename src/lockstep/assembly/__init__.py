"""Assembling images: layer sources, the layer cache, the image layout, OCI values and
archives, and the builder that orchestrates them (``lockstep build``, Bazel's actions).

Reads the pinned inputs (``lockstep.inputs``); nothing in the images imports it.
"""
