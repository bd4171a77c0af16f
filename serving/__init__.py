"""vipare HTTP service."""
