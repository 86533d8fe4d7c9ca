//! palisade-testkit
