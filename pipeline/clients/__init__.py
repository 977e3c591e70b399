"""Every connection the pipeline opens is built here: PostgreSQL pools and connections, Redis clients, Kafka
client settings and topics, each with TLS, timeouts and credentials from config; and which errors are
transient (the service is away: retry) rather than a refusal (dead-letter), decided in one place."""
