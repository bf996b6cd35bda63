"""threadloom.strategies."""
