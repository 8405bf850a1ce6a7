//! Parsing a repository location and building the object store behind it.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, RetryConfig};
use url::Url;

use super::StoreError;

/// Where a repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory on a local disk or a network mount.
    Local(PathBuf),
    /// An object store addressed by URL (`s3://`, `gs://`, `az://`): bucket plus prefix.
    Cloud {
        url: Url,
        bucket: String,
        prefix: String,
    },
    /// A store that lives in this process only (tests, experiments).
    Memory(String),
}

/// Extra settings for the object store client, as `key=value` pairs in the vocabulary
/// of the `object_store` builders (`endpoint`, `region`, `allow_http`,
/// `virtual_hosted_style_request`, ...). Credentials are better left to the standard
/// environment variables and credential chains, which are read automatically.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    pub options: Vec<(String, String)>,
}

impl StoreOptions {
    pub fn parse(pairs: &[String]) -> Result<StoreOptions, String> {
        let mut options = Vec::new();
        for p in pairs {
            let (k, v) = p.split_once('=').ok_or_else(|| {
                format!("store option `{p}` is not KEY=VALUE (e.g. endpoint=http://127.0.0.1:3900)")
            })?;
            options.push((k.trim().to_string(), v.trim().to_string()));
        }
        Ok(StoreOptions { options })
    }
}

impl Location {
    /// Parses `/path`, `./path`, `file:///path`, `s3://bucket/prefix`, `gs://...`,
    /// `az://container/prefix` or `memory://name`.
    pub fn parse(s: &str) -> Result<Location, StoreError> {
        let bad = |message: String| StoreError::BadLocation {
            location: s.to_string(),
            message,
        };
        if s.is_empty() {
            return Err(bad("the repository location is empty".into()));
        }
        if !s.contains("://") {
            return Ok(Location::Local(absolute(PathBuf::from(s))));
        }
        let url = Url::parse(s).map_err(|e| bad(format!("not a valid URL: {e}")))?;
        if !url.username().is_empty() || url.password().is_some() {
            // Never repeat what looks like a credential.
            let mut shown = url.clone();
            let _ = shown.set_username("");
            let _ = shown.set_password(None);
            return Err(StoreError::BadLocation {
                location: shown.to_string(),
                message: "the URL carries credentials (USER:SECRET@), which ballast does not \
                          read from a location: give them in the store's environment variables \
                          (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AZURE_STORAGE_ACCOUNT_KEY, \
                          GOOGLE_APPLICATION_CREDENTIALS)"
                    .into(),
            });
        }
        match url.scheme() {
            "file" => {
                let p = url
                    .to_file_path()
                    .map_err(|_| bad("file:// URLs need an absolute path".into()))?;
                Ok(Location::Local(p))
            }
            "memory" => Ok(Location::Memory(format!(
                "{}{}",
                url.host_str().unwrap_or(""),
                url.path()
            ))),
            "azure" | "abfs" | "abfss" => Err(bad(
                "use az://CONTAINER/PREFIX, with the account in AZURE_STORAGE_ACCOUNT_NAME".into(),
            )),
            "s3" | "s3a" | "gs" | "az" => {
                let bucket = url.host_str().unwrap_or_default().to_string();
                if bucket.is_empty() {
                    return Err(bad(
                        "the URL names no bucket: use SCHEME://BUCKET/PREFIX".into()
                    ));
                }
                let prefix = url.path().trim_matches('/').to_string();
                Ok(Location::Cloud {
                    url,
                    bucket,
                    prefix,
                })
            }
            other => Err(bad(format!(
                "unknown scheme `{other}`: use a path, file://, s3://, gs://, az:// or memory://"
            ))),
        }
    }

    pub fn local_path(&self) -> Option<&std::path::Path> {
        match self {
            Location::Local(p) => Some(p),
            _ => None,
        }
    }

    pub(super) fn build(&self, options: &StoreOptions) -> Result<Arc<dyn ObjectStore>, StoreError> {
        let fail = |message: String| StoreError::BadLocation {
            location: self.to_string(),
            message,
        };
        let retry = RetryConfig {
            max_retries: 6,
            retry_timeout: Duration::from_secs(90),
            backoff: Default::default(),
        };
        match self {
            Location::Local(path) => {
                if !path.is_dir() {
                    return Err(StoreError::NoSuchDirectory { path: path.clone() });
                }
                let fs = LocalFileSystem::new_with_prefix(path).map_err(|e| fail(e.to_string()))?;
                Ok(Arc::new(fs))
            }
            Location::Memory(name) => {
                static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
                let mut stores = STORES.get_or_init(Default::default).lock().unwrap();
                Ok(stores
                    .entry(name.clone())
                    .or_insert_with(|| Arc::new(InMemory::new()))
                    .clone())
            }
            Location::Cloud { url, prefix, .. } => {
                let base = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
                let store: Arc<dyn ObjectStore> = match url.scheme() {
                    "s3" | "s3a" => {
                        let mut b = AmazonS3Builder::from_env().with_url(base).with_retry(retry);
                        for (k, v) in &options.options {
                            b = b.with_config(k.parse().map_err(|e| fail(format!("{e}")))?, v);
                        }
                        Arc::new(b.build().map_err(|e| fail(e.to_string()))?)
                    }
                    "gs" => {
                        let mut b = GoogleCloudStorageBuilder::from_env()
                            .with_url(base)
                            .with_retry(retry);
                        for (k, v) in &options.options {
                            b = b.with_config(k.parse().map_err(|e| fail(format!("{e}")))?, v);
                        }
                        Arc::new(b.build().map_err(|e| fail(e.to_string()))?)
                    }
                    _ => {
                        let mut b = MicrosoftAzureBuilder::from_env()
                            .with_url(base)
                            .with_retry(retry);
                        for (k, v) in &options.options {
                            b = b.with_config(k.parse().map_err(|e| fail(format!("{e}")))?, v);
                        }
                        Arc::new(b.build().map_err(|e| fail(e.to_string()))?)
                    }
                };
                if prefix.is_empty() {
                    Ok(store)
                } else {
                    Ok(Arc::new(PrefixStore::new(store, prefix.as_str())))
                }
            }
        }
    }
}

/// Shows the location without credentials or query strings.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::Memory(n) => write!(f, "memory://{n}"),
            Location::Cloud {
                url,
                bucket,
                prefix,
            } => {
                write!(f, "{}://{bucket}", url.scheme())?;
                if !prefix.is_empty() {
                    write!(f, "/{prefix}")?;
                }
                Ok(())
            }
        }
    }
}

fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_url_are_refused_and_never_repeated() {
        let err = Location::parse("s3://AKIAEXAMPLE:hunter2secret@bucket/prefix")
            .unwrap_err()
            .to_string();
        assert!(err.contains("carries credentials"), "{err}");
        assert!(err.contains("s3://bucket/prefix"), "{err}");
        assert!(
            !err.contains("hunter2secret") && !err.contains("AKIAEXAMPLE"),
            "{err}"
        );
    }

    #[test]
    fn parses_the_supported_forms() {
        assert!(
            matches!(Location::parse("/srv/repo").unwrap(), Location::Local(p) if p == PathBuf::from("/srv/repo"))
        );
        assert!(
            matches!(Location::parse("file:///srv/repo").unwrap(), Location::Local(p) if p == PathBuf::from("/srv/repo"))
        );
        match Location::parse("s3://bucket/some/prefix/").unwrap() {
            Location::Cloud { bucket, prefix, .. } => {
                assert_eq!(bucket, "bucket");
                assert_eq!(prefix, "some/prefix");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            matches!(Location::parse("memory://t1").unwrap(), Location::Memory(n) if n == "t1")
        );
        let err = Location::parse("ftp://x/y").unwrap_err().to_string();
        assert!(err.contains("unknown scheme `ftp`"), "{err}");
        assert!(Location::parse("s3:///nobucket").is_err());
    }

    #[test]
    fn display_drops_the_query() {
        let l = Location::parse("s3://bucket/p?token=abc").unwrap();
        let shown = l.to_string();
        assert_eq!(shown, "s3://bucket/p");
    }
}
