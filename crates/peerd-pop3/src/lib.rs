//! peerd-pop3 (being written).
