"""Model backends. ``base`` defines the batch-first request/response types; ``hf`` runs transformers."""
