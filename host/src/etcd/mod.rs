//! etcd: connections, streamed snapshots into the repository, reading and writing
//! its database files natively (status, revision bumps, replayed changes), restore
//! for one member or a new cluster, continuous change capture and point-in-time
//! restore.

pub mod bbolt;
pub mod connect;
pub mod delta;
pub mod drill;
pub mod inplace;
pub mod local;
pub mod mvcc;
pub mod pitr;
pub mod restore;
pub mod snapshot;
pub mod status;
pub mod watch;
