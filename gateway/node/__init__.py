"""One node: a supervisor, its workers, and the memory they share."""
