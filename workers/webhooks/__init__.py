"""Webhook events and their signed, retried delivery."""
