//! The repositories, listed on an interval by `ballast snapshots`: whether each is
//! reachable, how many snapshots it holds, and the newest backup of each
//! schedule, so that the newest-success gauges hold after a restart, and after a
//! success the state file never saw (a run by hand with the schedule's tag).

use std::sync::Arc;

use jiff::Timestamp;

use super::jobs::schedule_tag;
use super::metrics::{sched, seconds, Repo};
use super::Server;

/// How far ahead of this clock a snapshot's time may be and still count.
const SKEW: std::time::Duration = std::time::Duration::from_secs(300);

pub async fn run(server: Arc<Server>) {
    loop {
        for repo in &server.config.repositories {
            probe(&server, repo).await;
        }
        let mut stop = server.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(server.config.probe_interval) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Lists one repository and sets its gauges.
pub async fn probe(server: &Server, repo: &super::config::Repository) {
    let labels = Repo {
        repository: repo.name.clone(),
    };
    let argv = ["--json".to_string(), "snapshots".to_string()];
    let listed = server
        .runner
        .run(
            repo,
            &argv,
            Some(server.config.probe_interval),
            server.stop.clone(),
        )
        .await;
    server
        .metrics
        .repository_last_probe
        .get_or_create(&labels)
        .set(seconds(Timestamp::now()));
    let list = match listed {
        Ok(f) if f.exit_code == Some(0) => f.output,
        Ok(f) => {
            tracing::warn!("repository {}: cannot list it: {}", repo.name, f.error());
            None
        }
        Err(e) => {
            tracing::warn!("repository {}: cannot list it: {e}", repo.name);
            None
        }
    };
    let Some(serde_json::Value::Array(list)) = list else {
        server.metrics.repository_up.get_or_create(&labels).set(0);
        return;
    };
    server.metrics.repository_up.get_or_create(&labels).set(1);
    server
        .metrics
        .repository_snapshots
        .get_or_create(&labels)
        .set(list.len() as i64);
    for s in server
        .config
        .schedules
        .iter()
        .filter(|s| s.repository.name == repo.name)
    {
        let tag = schedule_tag(&s.name);
        let newest = list
            .iter()
            .filter(|e| {
                e["snapshot"]["tags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t.as_str() == Some(&tag)))
            })
            .filter_map(|e| e["snapshot"]["time"].as_str()?.parse::<Timestamp>().ok())
            // A record from a clock far ahead would hide staleness until then.
            .filter(|t| *t <= Timestamp::now() + SKEW)
            .max();
        if let Some(newest) = newest {
            let gauge = server.metrics.last_success.get_or_create(&sched(s));
            if gauge.get() < seconds(newest) {
                gauge.set(seconds(newest));
            }
        }
    }
}
