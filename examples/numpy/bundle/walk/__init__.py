"""Random walks with numpy (a dependency the bundle locks, not part of the image)."""
