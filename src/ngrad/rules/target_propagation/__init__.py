"""Target propagation: exact-inverse TP, difference target propagation, direct DTP with the
difference reconstruction loss and L-DRL, on shared target machinery.
See docs/target_propagation.md."""
