//! The network side of a capture: paginated LISTs, several resources at once, each
//! list's pages at the resourceVersion of its first, items split out of each page
//! as the bytes arrive and handed to the writer. An expired continue token (410)
//! or a first page cut short starts the list over; a later page cut short is asked
//! for again with the same token and its items already handed over are skipped.

use std::sync::Arc;

use futures::stream::{self, StreamExt};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, oneshot};

use crate::kube::client::Cluster;
use crate::kube::discovery::ApiResource;
use crate::kube::list_stream::{ListSplitter, SplitError};
use crate::kube::manifest::{ListRecord, Missed};
use crate::kube::KubeError;

/// What the lister tells the writer, in order.
pub enum Msg {
    /// A list of resource `res` begins (in `namespace`, or all of them).
    ListStart {
        res: usize,
        namespace: Option<String>,
    },
    /// One object, as the server sent it, holding its share of the byte budget
    /// until the writer has stored it.
    Item {
        res: usize,
        bytes: Vec<u8>,
        held: tokio::sync::OwnedSemaphorePermit,
    },
    /// A page has been handed over. The writer answers once it has stored its
    /// objects: `false` if they came out of key order (the list then starts over,
    /// and the writer keeps that resource's objects in memory until it is done).
    PageEnd {
        res: usize,
        reply: oneshot::Sender<bool>,
    },
    /// Forget the objects of the list in progress: it starts over.
    ListRestart { res: usize, reason: String },
    /// The list is whole.
    ListDone { res: usize, record: ListRecord },
    /// The resource could not be listed (whole); `forbidden` for a 403.
    Failed {
        res: usize,
        missed: Missed,
        forbidden: bool,
    },
    /// Every list of the resource is done.
    ResourceDone { res: usize },
}

/// One list to make.
#[derive(Debug, Clone)]
pub struct Job {
    pub res: usize,
    pub namespaces: Vec<Option<String>>,
    /// Whether the label selector applies (not to the Namespace objects nor to the
    /// cluster-scoped objects a namespace backup needs: those come whatever their
    /// labels).
    pub selector: bool,
    /// Got one by one by name (`namespaces` holds the names), not listed: the
    /// Namespace objects of a backup of named namespaces, which a user allowed into
    /// those namespaces only may get but not list.
    pub by_name: bool,
}

pub struct Lister {
    pub cluster: Arc<Cluster>,
    pub resources: Arc<Vec<ApiResource>>,
    pub page_size: u32,
    pub label_selector: Option<String>,
    pub max_object: usize,
    /// Bytes of objects on their way to the writer, at most [`IN_FLIGHT`].
    pub budget: Arc<tokio::sync::Semaphore>,
}

/// The most object bytes handed over and not yet stored, for all lists together
/// (an object larger than this takes the whole budget).
pub const IN_FLIGHT: usize = 32 << 20;

/// How many times one list starts over before the resource is given up.
const MAX_RESTARTS: u32 = 5;
/// How many times one page is asked for again after its connection broke.
const PAGE_RETRIES: u32 = 3;

enum Outcome {
    Done(ListRecord),
    Restart(String),
    Failed(KubeError),
}

impl Lister {
    /// Runs `jobs`, `concurrency` at a time.
    pub async fn run(&self, jobs: Vec<Job>, concurrency: usize, tx: &mpsc::Sender<Msg>) {
        stream::iter(jobs)
            .for_each_concurrent(concurrency.max(1), |job| async move {
                self.resource(job, tx).await;
            })
            .await;
    }

    async fn resource(&self, job: Job, tx: &mpsc::Sender<Msg>) {
        let res = job.res;
        for ns in job.namespaces {
            let mut restarts = 0;
            loop {
                if tx
                    .send(Msg::ListStart {
                        res,
                        namespace: ns.clone(),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                let outcome = match (&ns, job.by_name) {
                    (Some(name), true) => self.get_one(res, name, tx).await,
                    _ => self.list(res, ns.as_deref(), job.selector, tx).await,
                };
                match outcome {
                    Outcome::Done(mut record) => {
                        record.restarts = restarts;
                        let _ = tx.send(Msg::ListDone { res, record }).await;
                        break;
                    }
                    Outcome::Restart(reason) if restarts < MAX_RESTARTS => {
                        restarts += 1;
                        tracing::warn!(
                            "{}: listing again: {reason}",
                            self.resources[res].qualified()
                        );
                        let _ = tx.send(Msg::ListRestart { res, reason }).await;
                    }
                    Outcome::Restart(reason) => {
                        let missed = Missed {
                            what: self.resources[res].qualified(),
                            namespace: ns.clone(),
                            code: None,
                            reason: format!("started over {restarts} times and gave up: {reason}"),
                        };
                        let _ = tx
                            .send(Msg::Failed {
                                res,
                                missed,
                                forbidden: false,
                            })
                            .await;
                        break;
                    }
                    Outcome::Failed(e) => {
                        let (code, forbidden, reason) = match &e {
                            KubeError::Api {
                                code,
                                reason,
                                message,
                                ..
                            } => (Some(*code), *code == 403, format!("{reason}: {message}")),
                            other => (None, false, other.to_string()),
                        };
                        let missed = Missed {
                            what: self.resources[res].qualified(),
                            namespace: ns.clone(),
                            code,
                            reason,
                        };
                        let _ = tx
                            .send(Msg::Failed {
                                res,
                                missed,
                                forbidden,
                            })
                            .await;
                        break;
                    }
                }
            }
        }
        let _ = tx.send(Msg::ResourceDone { res }).await;
    }

    /// One object, got by name: a list of it alone (none if there is no such
    /// object).
    async fn get_one(&self, res: usize, name: &str, tx: &mpsc::Sender<Msg>) -> Outcome {
        let r = &self.resources[res];
        let mut record = ListRecord {
            namespace: Some(name.to_string()),
            pages: 1,
            ..Default::default()
        };
        // A name Kubernetes cannot give an object names none.
        let plain = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !plain {
            return Outcome::Done(record);
        }
        let path = format!("{}/{name}", r.path(None));
        let what = format!("getting {} {name}", r.qualified());
        let obj: serde_json::Value = match self.cluster.get_json(&path, &what).await {
            Ok(o) => o,
            Err(KubeError::Api { code: 404, .. }) => return Outcome::Done(record),
            Err(e) => return Outcome::Failed(e),
        };
        record.resource_version = obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let bytes = serde_json::to_vec(&obj).expect("a JSON value serializes");
        let share = bytes.len().clamp(1, IN_FLIGHT) as u32;
        let Ok(held) = self.budget.clone().acquire_many_owned(share).await else {
            return Outcome::Failed(KubeError::Invalid("the capture stopped".into()));
        };
        if tx.send(Msg::Item { res, bytes, held }).await.is_err() {
            return Outcome::Failed(KubeError::Invalid("the capture stopped".into()));
        }
        Outcome::Done(record)
    }

    /// One whole list: every page.
    async fn list(
        &self,
        res: usize,
        namespace: Option<&str>,
        selector: bool,
        tx: &mpsc::Sender<Msg>,
    ) -> Outcome {
        let r = &self.resources[res];
        let what = match namespace {
            Some(ns) => format!("listing {} in {ns}", r.qualified()),
            None => format!("listing {}", r.qualified()),
        };
        let base = r.path(namespace);
        let mut token: Option<String> = None;
        let mut record = ListRecord {
            namespace: namespace.map(str::to_string),
            ..Default::default()
        };
        loop {
            let mut query = format!("limit={}", self.page_size);
            if let Some(sel) = self.label_selector.as_ref().filter(|_| selector) {
                query.push_str("&labelSelector=");
                query.push_str(&encode(sel));
            }
            if let Some(t) = &token {
                query.push_str("&continue=");
                query.push_str(&encode(t));
            }
            let path = format!("{base}?{query}");
            let mut sent = 0usize;
            let mut attempt = 0;
            let head = loop {
                match self.page(res, &path, &what, sent, tx).await {
                    Ok((head, n)) => {
                        sent += n;
                        break head;
                    }
                    Err(PageError::Broken { sent: n, detail }) => {
                        sent += n;
                        attempt += 1;
                        if token.is_none() {
                            // The first page has no token: asked again, it would be a
                            // list at a newer resourceVersion.
                            return Outcome::Restart(format!(
                                "the first page was cut short: {detail}"
                            ));
                        }
                        if attempt > PAGE_RETRIES {
                            return Outcome::Failed(KubeError::Transport { what, detail });
                        }
                        tracing::warn!("{what}: a page was cut short after {sent} objects ({detail}); asking for the rest again");
                    }
                    Err(PageError::Api(KubeError::Api {
                        code: 410, message, ..
                    })) => {
                        return Outcome::Restart(format!(
                            "the continue token expired (410 Gone): {message}"
                        ));
                    }
                    Err(PageError::Api(e)) => return Outcome::Failed(e),
                    Err(PageError::Closed) => {
                        return Outcome::Failed(KubeError::Invalid("the capture stopped".into()))
                    }
                }
            };
            record.pages += 1;
            record.objects += sent as u64;
            if token.is_none() {
                record.resource_version = head.resource_version().unwrap_or_default().to_string();
            }
            let (reply, ordered) = oneshot::channel();
            if tx.send(Msg::PageEnd { res, reply }).await.is_err() {
                return Outcome::Failed(KubeError::Invalid("the capture stopped".into()));
            }
            match ordered.await {
                Ok(true) => {}
                Ok(false) => {
                    return Outcome::Restart("the server sent objects out of key order".into())
                }
                Err(_) => return Outcome::Failed(KubeError::Invalid("the capture stopped".into())),
            }
            match head.continue_token() {
                Some(t) => token = Some(t.to_string()),
                None => return Outcome::Done(record),
            }
        }
    }

    /// One page: its items after the first `skip` go to the writer. Returns the
    /// list's head and how many items were handed over.
    async fn page(
        &self,
        res: usize,
        path: &str,
        what: &str,
        skip: usize,
        tx: &mpsc::Sender<Msg>,
    ) -> Result<(crate::kube::list_stream::ListHead, usize), PageError> {
        let response = self.cluster.get(path, what).await.map_err(|e| match e {
            KubeError::Transport { detail, .. } => PageError::Broken { sent: 0, detail },
            other => PageError::Api(other),
        })?;
        let mut body = response.into_body();
        let mut splitter = ListSplitter::new(self.max_object);
        let mut seen = 0usize;
        let mut sent = 0usize;
        let mut batch: Vec<Vec<u8>> = Vec::new();
        loop {
            let frame = match body.frame().await {
                None => break,
                Some(Ok(f)) => f,
                Some(Err(e)) => {
                    return Err(PageError::Broken {
                        sent,
                        detail: e.to_string(),
                    });
                }
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            splitter
                .feed::<SplitError>(&data, &mut |item| {
                    seen += 1;
                    if seen > skip {
                        batch.push(item.to_vec());
                    }
                    Ok(())
                })
                .map_err(|e| {
                    PageError::Api(KubeError::Decode {
                        what: what.to_string(),
                        detail: e.to_string(),
                    })
                })?;
            for bytes in batch.drain(..) {
                let share = bytes.len().clamp(1, IN_FLIGHT) as u32;
                let held = self
                    .budget
                    .clone()
                    .acquire_many_owned(share)
                    .await
                    .map_err(|_| PageError::Closed)?;
                tx.send(Msg::Item { res, bytes, held })
                    .await
                    .map_err(|_| PageError::Closed)?;
                sent += 1;
            }
        }
        match splitter.finish() {
            Ok(head) => Ok((head, sent)),
            Err(SplitError::Truncated) => Err(PageError::Broken {
                sent,
                detail: "the response ended in the middle of the list".into(),
            }),
            Err(e) => Err(PageError::Api(KubeError::Decode {
                what: what.to_string(),
                detail: e.to_string(),
            })),
        }
    }
}

enum PageError {
    /// The connection broke after `sent` items were handed over.
    Broken {
        sent: usize,
        detail: String,
    },
    Api(KubeError),
    /// The writer has stopped.
    Closed,
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
