"""Energy-based rules, where feedback changes activity: equilibrium propagation, contrastive Hebbian
learning and predictive coding, on a shared relaxation. See docs/energy_based.md."""
