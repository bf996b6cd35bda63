"""threadloom.workers."""
