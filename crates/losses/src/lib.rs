//! kiln-losses
