"""Training recipes of the paper as library code: alt_opt (the 4-step alternating optimisation)."""
