//! Kubernetes objects through the API: capture into the repository, browse, diff,
//! export clean manifests, and restore into a cluster. See `docs/kube.md`.
//!
//! | module        | what it does                                                   |
//! |---------------|----------------------------------------------------------------|
//! | `client`      | the connection (kubeconfig, context, in-cluster), rate limits, retries |
//! | `discovery`   | the groups and resources a cluster serves, per backup          |
//! | `select`      | namespaces, resources, labels and the cluster scope a backup takes |
//! | `list_stream` | list responses split into objects as the bytes arrive          |
//! | `capture/`    | a backup: lists in, objects stored, trees, the manifest        |
//! | `manifest`    | what a backup captured and what it did not, and why            |
//! | `object`      | one object's stored form                                       |
//! | `layout`      | where objects live in a snapshot's tree                        |
//! | `stored`      | a Kubernetes snapshot read back: its objects and manifest      |
//! | `clean`       | what export drops, and why                                     |
//! | `export`      | clean manifests into a directory                               |
//! | `diff`        | two snapshots, or a snapshot and the live cluster, compared    |
//! | `labels`      | label selectors matched against stored objects                 |
//! | `restore/`    | restore into a cluster: scope, pre-flight, order, send, report |
//! | `yaml`        | YAML that YAML 1.1 and 1.2 parsers read back the same          |

pub mod capture;
pub mod clean;
pub mod client;
pub mod diff;
pub mod discovery;
pub mod export;
pub mod labels;
pub mod layout;
pub mod list_stream;
pub mod manifest;
pub mod object;
pub mod restore;
pub mod select;
pub mod stored;
pub mod yaml;

use crate::repo::RepoError;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// A kubeconfig, a context, the service account.
    #[error("{0}")]
    Config(String),
    #[error(
        "cannot reach the Kubernetes API server at {server} (context {context}): {detail}; {hint}"
    )]
    Unreachable {
        server: String,
        context: String,
        detail: String,
        hint: &'static str,
    },
    #[error(
        "the API server at {server} refused the credentials of context {context} (401 Unauthorized): the token or certificate may have expired; refresh the kubeconfig"
    )]
    Unauthorized { server: String, context: String },
    #[error("{what}: the API server answered {code} {reason}: {message}")]
    Api {
        what: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("{what}: the connection broke: {detail}")]
    Transport { what: String, detail: String },
    #[error("{what}: the answer does not decode: {detail}")]
    Decode { what: String, detail: String },
    /// `--strict`, and something was missed.
    #[error("the backup missed objects and --strict is set, so nothing was recorded: {0}")]
    Incomplete(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Repo(#[from] RepoError),
}
