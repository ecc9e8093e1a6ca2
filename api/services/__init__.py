"""Inference services: create, read, list, update (scale/resources), delete, events."""
