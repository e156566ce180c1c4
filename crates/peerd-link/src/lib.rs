//! peerd-link (being written).
