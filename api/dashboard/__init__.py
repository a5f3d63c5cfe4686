"""The dashboard: server-rendered pages of the fleet, revenue, usage and invoices.

Two views, both under `/dashboard/`: the team's (signed in with the admin
token, see `session.py`) and each customer's (a signed, expiring link for one
tenant, no password). Routes are in `endpoints.py`, what each page shows in
`views.py`, the fleet list in `fleet.py`, chart geometry in `charts.py`.
"""
