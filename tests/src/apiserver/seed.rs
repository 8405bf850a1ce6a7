//! Many objects at once, for benchmarks and scale tests: ConfigMaps and Secrets of a
//! few KiB spread over namespaces, custom objects of two CRDs, Deployments and
//! Services. Deterministic for a given seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{ApiError, State};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dataset {
    pub namespaces: usize,
    pub configmaps: usize,
    pub secrets: usize,
    /// Split evenly between two CRDs (`widgets.bench.example.com`,
    /// `gadgets.bench.example.com`).
    pub custom: usize,
    pub deployments: usize,
    pub services: usize,
    /// Sizes of ConfigMap and Secret data, in bytes.
    pub min_size: usize,
    pub max_size: usize,
    pub seed: u64,
}

impl Default for Dataset {
    fn default() -> Dataset {
        Dataset {
            namespaces: 50,
            configmaps: 43_000,
            secrets: 43_000,
            custom: 10_000,
            deployments: 2_000,
            services: 2_000,
            min_size: 1024,
            max_size: 8192,
            seed: 1,
        }
    }
}

const WORDS: &[&str] = &[
    "replicas",
    "timeout",
    "endpoint",
    "enabled",
    "cache",
    "region",
    "retries",
    "level",
    "debug",
    "info",
    "backend",
    "frontend",
    "queue",
    "worker",
    "port",
    "host",
    "tls",
    "metrics",
    "interval",
    "threshold",
    "bucket",
    "shard",
    "primary",
    "replica",
];

fn text(rng: &mut StdRng, size: usize) -> String {
    let mut s = String::with_capacity(size + 32);
    while s.len() < size {
        let k = WORDS[rng.gen_range(0..WORDS.len())];
        let w = WORDS[rng.gen_range(0..WORDS.len())];
        s.push_str(&format!("{k}.{w}={}\n", rng.gen_range(0..100_000)));
    }
    s.truncate(size);
    s
}

fn secret_value(rng: &mut StdRng, size: usize) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = (0..size * 3 / 4).map(|_| rng.gen()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn crd(plural: &str, kind: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.bench.example.com")},
        "spec": {"group": "bench.example.com", "scope": "Namespaced",
                 "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind, "listKind": format!("{kind}List")},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                               "subresources": {"status": {}}}]}
    })
}

/// Creates the dataset; returns how many objects were created.
pub fn load(state: &State, d: &Dataset) -> Result<usize, ApiError> {
    let mut rng = StdRng::seed_from_u64(d.seed);
    let mut inner = state.inner.lock().unwrap();
    let ty = |inner: &super::api::Inner, storage: &str| {
        inner
            .types
            .iter()
            .find(|t| t.storage == storage)
            .cloned()
            .expect("a known type")
    };
    let mut n = 0;
    let ns_type = ty(&inner, "namespaces.");
    let namespaces: Vec<String> = (0..d.namespaces.max(1))
        .map(|i| format!("bench-{i:03}"))
        .collect();
    for ns in &namespaces {
        inner.create(
            &ns_type,
            "v1",
            None,
            json!({"metadata": {"name": ns, "labels": {"team": "bench"}}}),
            "seed",
            false,
        )?;
        n += 1;
    }
    let crd_type = ty(&inner, "customresourcedefinitions.apiextensions.k8s.io");
    for (plural, kind) in [("widgets", "Widget"), ("gadgets", "Gadget")] {
        inner.create(&crd_type, "v1", None, crd(plural, kind), "seed", false)?;
        n += 1;
    }
    let size = |rng: &mut StdRng| rng.gen_range(d.min_size..=d.max_size.max(d.min_size));
    let pick = |i: usize| namespaces[i % namespaces.len()].clone();
    let cm = ty(&inner, "configmaps.");
    for i in 0..d.configmaps {
        let s = size(&mut rng);
        let body = json!({"metadata": {"name": format!("config-{i:06}"), "labels": {"app": format!("app-{}", i % 97)}},
                          "data": {"application.properties": text(&mut rng, s)}});
        inner.create(&cm, "v1", Some(&pick(i)), body, "seed", false)?;
        n += 1;
    }
    let secret = ty(&inner, "secrets.");
    for i in 0..d.secrets {
        let s = size(&mut rng);
        let body = json!({"metadata": {"name": format!("secret-{i:06}")}, "type": "Opaque",
                          "data": {"token": secret_value(&mut rng, s)}});
        inner.create(&secret, "v1", Some(&pick(i)), body, "seed", false)?;
        n += 1;
    }
    let kinds = [
        (ty(&inner, "widgets.bench.example.com"), "Widget"),
        (ty(&inner, "gadgets.bench.example.com"), "Gadget"),
    ];
    for i in 0..d.custom {
        let (rt, kind) = &kinds[i % 2];
        let body = json!({"apiVersion": "bench.example.com/v1", "kind": kind,
                          "metadata": {"name": format!("{}-{i:06}", kind.to_lowercase())},
                          "spec": {"size": rng.gen_range(1..100), "color": WORDS[i % WORDS.len()], "notes": text(&mut rng, 300)}});
        inner.create(rt, "v1", Some(&pick(i)), body, "seed", false)?;
        n += 1;
    }
    let deploy = ty(&inner, "deployments.apps");
    let svc = ty(&inner, "services.");
    for i in 0..d.deployments.max(d.services) {
        let name = format!("web-{i:05}");
        let labels = json!({"app": name});
        if i < d.deployments {
            let body = json!({"metadata": {"name": name, "labels": labels},
                "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                         "template": {"metadata": {"labels": labels},
                                      "spec": {"containers": [{"name": "web", "image": format!("registry.example.com/web:{}", i % 13),
                                                               "ports": [{"containerPort": 8080}],
                                                               "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}}}});
            inner.create(&deploy, "v1", Some(&pick(i)), body, "seed", false)?;
            n += 1;
        }
        if i < d.services {
            let body = json!({"metadata": {"name": name, "labels": labels},
                "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}});
            inner.create(&svc, "v1", Some(&pick(i)), body, "seed", false)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Changes one data value of `fraction` of the seeded ConfigMaps and Secrets;
/// returns how many were changed.
pub fn mutate(state: &State, fraction: f64) -> Result<usize, ApiError> {
    let mut inner = state.inner.lock().unwrap();
    let mut rng = StdRng::seed_from_u64(inner.store.revision());
    let mut changed = 0;
    for storage in ["configmaps.", "secrets."] {
        let rt = inner
            .types
            .iter()
            .find(|t| t.storage == storage)
            .cloned()
            .expect("built in");
        let keys: Vec<String> = inner
            .store
            .keys(storage)
            .into_iter()
            .filter(|k| k.starts_with("bench-"))
            .collect();
        for key in keys {
            if !rng.gen_bool(fraction.clamp(0.0, 1.0)) {
                continue;
            }
            let old = inner.store.get(storage, &key).expect("listed");
            let mut new = (*old).clone();
            let field = if storage == "secrets." {
                "token"
            } else {
                "application.properties"
            };
            new["data"][field] = if storage == "secrets." {
                json!(secret_value(&mut rng, 1024))
            } else {
                json!(text(&mut rng, 1024))
            };
            inner.update(&rt, "v1", &key, &old, new, false, "seed", false)?;
            changed += 1;
        }
    }
    Ok(changed)
}
