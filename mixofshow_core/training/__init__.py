"""ED-LoRA and Orthogonal Adaptation training, host-independent (spec §1; Po et al. 2024)."""
