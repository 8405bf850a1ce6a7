//! File and volume backup: directory trees (a mounted PersistentVolume, a host path)
//! backed up file by file into the repository, listed, compared and restored.

pub mod backup;
pub mod diff;
pub mod exclude;
pub mod ls;
pub mod metadata;
pub mod restore;
