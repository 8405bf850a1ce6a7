//! etcd: reading snapshot files natively (status), and, as the etcd work goes on,
//! streamed snapshots, restore, change capture and point-in-time restore.

pub mod bbolt;
pub mod status;
