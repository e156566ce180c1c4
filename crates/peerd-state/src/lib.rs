//! peerd-state (being written).
