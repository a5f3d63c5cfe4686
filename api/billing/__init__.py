"""Billing: billing runs, invoices, payments, and invoice documents (HTML and PDF)."""
