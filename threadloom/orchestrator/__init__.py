"""threadloom.orchestrator."""
