//! kiln-loop
