"""Studies around a fit: planning a grid before compute (plan) and testing a forecast after it (verify)."""
