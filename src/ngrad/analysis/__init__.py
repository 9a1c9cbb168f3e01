"""Analyses of rules and trained runs: diagnostics against backprop, representational similarity
(CKA, RSA), neural predictivity, neural recordings and the reports built from them."""
