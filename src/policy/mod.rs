//! The policy engine: rules files compiled once, evaluated per scope with no I/O.
