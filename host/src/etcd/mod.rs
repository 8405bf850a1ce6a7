//! etcd: connections, streamed snapshots into the repository, and reading snapshot
//! files natively (status). Restore, change capture and point-in-time restore follow.

pub mod bbolt;
pub mod connect;
pub mod local;
pub mod snapshot;
pub mod status;
