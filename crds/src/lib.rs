//! palisade-crds
