"""Self-serve signup: `POST /v1/signup` makes a Tenant and its trialing Subscription."""
