//! ballast: backup and recovery for Kubernetes clusters.
//!
//! - [`repo`]: the deduplicating, compressing, encrypting repository;
//! - [`store`]: object storage locations (local paths, S3, GCS, Azure, memory);
//! - [`files`]: file and volume backup and restore;
//! - [`etcd`]: etcd snapshots, restore, change capture and point-in-time restore;
//! - [`kube`]: Kubernetes objects through the API: capture, browse, diff, export;
//! - [`plugins`]: application hooks as sandboxed WebAssembly components;
//! - [`verify`]: `ballast verify backups`: freshness, etcd, Kubernetes, application and sampled checks;
//! - [`server`]: `ballast server`: schedules, metrics, run records;
//! - [`cli`]: the `ballast` command line.

pub mod cli;
pub mod etcd;
pub mod files;
pub mod kube;
pub mod plugins;
pub mod repo;
pub mod server;
pub mod store;
pub mod sysinfo;
pub mod verify;
