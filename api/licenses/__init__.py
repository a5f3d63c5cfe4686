"""License delivery to instances, verification keys, revocation list, license history."""
