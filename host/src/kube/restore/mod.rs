//! A Kubernetes restore, in pieces that the `ballast restore kube` command puts
//! together (see `docs/kube.md`):
//!
//! | module      | what it does                                                  |
//! |-------------|---------------------------------------------------------------|
//! | `run`       | the command: pre-flight, then level by level, every outcome   |
//! | `scope`     | which stored objects a restore takes, and what they need      |
//! | `preflight` | what the target cannot take, found before anything is written |
//! | `order`     | the restore order, derived from the objects                   |
//! | `prepare`   | what a restore changes in an object before sending it         |
//! | `mapping`   | `--namespace-map` and `--storage-class-map`                   |
//! | `modifiers` | resource modifiers: JSON and merge patches selected by rules  |
//! | `target`    | the cluster restored into: what it serves, and the waits      |
//! | `apply`     | one object sent: owners, create, `--existing` policies        |
//! | `report`    | one outcome per object, and how the restore ended             |

pub mod apply;
pub mod mapping;
pub mod modifiers;
pub mod order;
pub mod preflight;
pub mod prepare;
pub mod report;
pub mod run;
pub mod scope;
pub mod target;
