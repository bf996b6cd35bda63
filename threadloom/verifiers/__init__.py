"""threadloom.verifiers."""
