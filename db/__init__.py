"""Persistence for serveplane: settings, models, repositories and the status state machine."""
