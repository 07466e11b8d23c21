"""Inputs → images, with no Docker daemon and no network but fetching locked files."""
