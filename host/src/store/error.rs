//! Errors from the object store, classified so that users are told what to fix.

use std::path::PathBuf;

use super::Location;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("repository location `{location}`: {message}")]
    BadLocation { location: String, message: String },

    #[error("{path}: no such directory (create the repository with `ballast repo init`, or check the path)")]
    NoSuchDirectory { path: PathBuf },

    #[error("{location}: object `{key}` not found")]
    NotFound { location: String, key: String },

    #[error("{location}: the bucket does not exist (create it first, or fix the bucket name in the URL)")]
    BucketMissing { location: String },

    #[error("{location}: access denied ({reason}); check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_* ...) and the bucket policy")]
    AccessDenied { location: String, reason: String },

    #[error("{location}: `{key}` already exists")]
    AlreadyExists { location: String, key: String },

    #[error("{location}: {message}")]
    Other { location: String, message: String },

    #[error("{location} is not consistent enough for a repository: {detail}. ballast relies on reading and listing what it has just written (its records, and the lease that keeps two prunes apart); use a store that gives read-after-write consistency")]
    Inconsistent { location: String, detail: String },
}

impl StoreError {
    pub(super) fn classify(location: &Location, key: &str, e: object_store::Error) -> StoreError {
        let location = location.to_string();
        let text = format!("{e}");
        let has = |needle: &str| text.contains(needle);
        if has("NoSuchBucket") || has("bucket does not exist") || has("ContainerNotFound") {
            return StoreError::BucketMissing { location };
        }
        if has("InvalidAccessKeyId")
            || has("SignatureDoesNotMatch")
            || has("AccessDenied")
            || has("Forbidden")
            || has("status 403")
            || has("status 401")
            || matches!(
                e,
                object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
            )
        {
            let reason = [
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "AccessDenied",
                "Forbidden",
            ]
            .into_iter()
            .find(|n| has(n))
            .unwrap_or("the server refused the credentials")
            .to_string();
            return StoreError::AccessDenied { location, reason };
        }
        match e {
            object_store::Error::NotFound { .. } => StoreError::NotFound {
                location,
                key: key.to_string(),
            },
            object_store::Error::AlreadyExists { .. } => StoreError::AlreadyExists {
                location,
                key: key.to_string(),
            },
            other => StoreError::Other {
                location,
                message: format!("{key}: {other}"),
            },
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}
