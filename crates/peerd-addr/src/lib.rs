//! peerd-addr (being written).
