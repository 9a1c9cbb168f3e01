"""Compartmental neurons: the dendritic cortical microcircuit, burstprop and segregated dendrites
(basal and apical compartments, one neuron carrying signal and error). See docs/compartmental.md."""
