"""Real-time IoT data pipeline: MQTT -> Kafka -> processing -> PostgreSQL and Redis Streams."""
__version__ = "0.1.0"
