//! Placeholder: the catalog generator.
