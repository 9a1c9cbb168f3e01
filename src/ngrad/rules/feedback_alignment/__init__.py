"""The feedback-alignment family: rules that send backprop's layer-by-layer error through another
matrix than W^T (fixed random, direct from the output, sign-concordant, or learned); one module per
rule, with the family's reference checks in ``checks.py``. See docs/feedback_alignment.md."""
