"""Credentials and accounts: API keys, users, plugin credentials."""
