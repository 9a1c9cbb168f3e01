"""Pictures (PNG): learning curves and angles of a run, comparisons, similarity heat maps and
one neuron's compartments."""
