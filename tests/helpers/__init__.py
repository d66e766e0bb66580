"""Helpers the tests and the chapters share: test images and an engine to drive."""
