"""Webhook endpoints: register, list, delete, test, and their deliveries."""
