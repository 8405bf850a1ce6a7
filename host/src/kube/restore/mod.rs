//! A Kubernetes restore, in pieces that the `ballast restore kube` command puts
//! together (see `docs/kube.md`):
//!
//! | module      | what it does                                                  |
//! |-------------|---------------------------------------------------------------|
//! | `order`     | the restore order, derived from the objects                   |
//! | `prepare`   | what a restore changes in an object before sending it         |
//! | `mapping`   | `--namespace-map` and `--storage-class-map`                   |
//! | `modifiers` | resource modifiers: JSON and merge patches selected by rules  |
//! | `target`    | the cluster restored into: what it serves, and the waits      |
//! | `report`    | one outcome per object, and how the restore ended             |

pub mod mapping;
pub mod modifiers;
pub mod order;
pub mod prepare;
pub mod report;
pub mod target;
