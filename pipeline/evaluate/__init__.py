"""Alert evaluation against ground truth (`python -m pipeline.evaluate`): simulated anomalies through the real
daemon, scored for precision, recall, detection delay and false alerts (docs/processing.md, "Evaluation")."""
