//! peerd-testkit (being written).
