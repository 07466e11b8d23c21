"""The image's Python packages: the pinned pex, the complete platform, the pex lock."""
