"""Instances: the heartbeat each tenant's instance sends, and the status it becomes."""
