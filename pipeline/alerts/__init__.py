"""Alert lifecycle (pure), operator-facing messages and webhook delivery."""
