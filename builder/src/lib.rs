//! Compiles an adsnap catalog into one snapshot, and generates realistic catalogs.

pub mod catalog;
pub mod gen;
