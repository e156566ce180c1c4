//! peerd-mail (being written).
