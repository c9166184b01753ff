//! History checkers (linearizability, causal consistency) and protocol models.
