"""Training feature: its nodes and the host code they need."""
