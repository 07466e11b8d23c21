"""Models that fail on purpose: docs/guides/bundles.md shows what a run says about each."""
