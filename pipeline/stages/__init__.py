"""Stages: each `process(item) -> list` turns one record into zero, one or many, or raises Invalid with a reason
(dead-lettered by the chain): decode, validate, transform (units), logs (log records), lateness."""
