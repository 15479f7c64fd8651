"""Tenants, API keys and scopes, budgets, and the tamper-evident audit trail (docs/tenants.md)."""
