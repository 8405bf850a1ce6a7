//! ballast: backup and recovery for Kubernetes clusters.
//!
//! - [`repo`]: the deduplicating, compressing, encrypting repository;
//! - [`store`]: object storage locations (local paths, S3, GCS, Azure, memory);
//! - [`files`]: file and volume backup and restore;
//! - [`etcd`]: etcd snapshot files (status; snapshots and restore to come);
//! - [`cli`]: the `ballast` command line.

pub mod cli;
pub mod etcd;
pub mod files;
pub mod repo;
pub mod store;
pub mod sysinfo;
