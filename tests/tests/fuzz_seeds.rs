//! The seed inputs of the fuzz targets (`host/fuzz/seeds/TARGET/`): each is a valid
//! input that the decoder behind its target accepts, so that fuzzing starts from
//! inputs that reach deep into each format. Written from ballast's own encoders and
//! files with `BALLAST_WRITE_SEEDS=1`; checked against the decoders otherwise.

use std::io::Cursor;
use std::path::PathBuf;

use ballast::etcd::bbolt::{self, Bolt};
use ballast::etcd::delta::{self, Record, Records};
use ballast::etcd::mvcc::{Change, KeyValue};
use ballast::plugins::catalog::Catalog;
use ballast::plugins::policy::Policy;
use ballast::repo::blob::{BlobId, BlobKind};
use ballast::repo::crypto::{Keys, MasterKey, Sealed};
use ballast::repo::index::{self, IndexFile, IndexPack};
use ballast::repo::keys::KeyRecord;
use ballast::repo::pack::{self, PackEntry, PackId};
use ballast::repo::tree::{Node, NodeKind, Tree};
use ballast_tests::plugins::root;
use ballast_tests::Env;

/// The fuzz targets' key (host/fuzz/src/lib.rs).
fn keys() -> Keys {
    MasterKey::from_bytes([7; 32]).derive(true)
}

fn seeds_dir(target: &str) -> PathBuf {
    root().join("host/fuzz/seeds").join(target)
}

/// Every seed of every target, written fresh from ballast's encoders.
fn generate() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let entries: Vec<PackEntry> = (0..3u8)
        .map(|i| PackEntry {
            kind: if i == 2 {
                BlobKind::Tree
            } else {
                BlobKind::Data
            },
            id: BlobId([i; 32]),
            offset: u32::from(i) * 20,
            length: 20,
            raw_len: 4,
        })
        .collect();
    let mut pack_seed = vec![1u8];
    pack_seed.extend(postcard::to_stdvec(&entries).unwrap());
    out.push(("pack", "trailer", pack_seed));

    let mut blob_seed = vec![1u8, 1];
    blob_seed.extend_from_slice(&5u32.to_le_bytes());
    blob_seed.extend(zstd::bulk::compress(b"hello", 1).unwrap());
    out.push(("blob", "zstd", blob_seed));
    out.push(("blob", "raw", vec![1u8, 0, b'h', b'i']));

    let file = IndexFile {
        packs: vec![IndexPack {
            id: PackId([9; 32]),
            size: 4096,
            blobs: entries.clone(),
        }],
        supersedes: vec!["index/0123".into()],
    };
    let mut index_seed = vec![1u8];
    index_seed.extend(postcard::to_stdvec(&file).unwrap());
    out.push(("index", "plain", index_seed));

    let mut file_node = Node::new(b"etc".to_vec(), NodeKind::Dir);
    file_node.subtree = Some(BlobId([3; 32]));
    let mut data = Node::new(b"data.bin".to_vec(), NodeKind::File);
    data.content = vec![BlobId([1; 32]), BlobId([2; 32])];
    data.size = 8;
    let mut link = Node::new(b"link".to_vec(), NodeKind::Symlink);
    link.target = Some(b"etc/app.yaml".to_vec());
    let tree = Tree {
        nodes: vec![data, file_node, link],
    };
    out.push(("tree", "three", postcard::to_stdvec(&tree).unwrap()));

    let kv = KeyValue {
        key: b"/registry/pods/default/p".to_vec(),
        create_revision: 5,
        mod_revision: 7,
        version: 2,
        value: b"v".to_vec(),
        lease: 0,
    };
    let mut segment = Vec::new();
    delta::encode(
        &Record::Change(Change::new(false, &kv, Some(&kv))),
        &mut segment,
    );
    delta::encode(
        &Record::Mark {
            revision: 7,
            unix_ms: 1_790_000_000_000,
        },
        &mut segment,
    );
    delta::encode(
        &Record::Gap {
            since_ms: 1_790_000_000_000,
            revision: 7,
        },
        &mut segment,
    );
    out.push(("delta", "records", segment));

    let mut w = bbolt::Writer::create(Cursor::new(Vec::new())).unwrap();
    {
        let mut b = w.bucket(b"key").unwrap();
        for i in 0..40u64 {
            let mut rev = [0u8; 17];
            rev[..8].copy_from_slice(&(i + 2).to_be_bytes());
            rev[8] = b'_';
            b.put(&rev, &kv_bytes(i)).unwrap();
        }
        b.finish().unwrap();
    }
    {
        let mut b = w.bucket(b"meta").unwrap();
        b.put(b"consistent_index", &9u64.to_be_bytes()).unwrap();
        b.finish().unwrap();
    }
    out.push(("bbolt", "etcd", w.finish().unwrap().into_inner()));

    // The policy the operators' guide shows, with its elided digests filled in.
    let guide = std::fs::read_to_string(root().join("docs/plugins/operators.md")).unwrap();
    let yaml = guide
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a YAML block in docs/plugins/operators.md");
    let policy: String = yaml
        .lines()
        .map(|l| match l.split_once("sha256: \"") {
            Some((head, _)) => format!("{head}sha256: \"{}\"", "ab".repeat(32)),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    out.push(("policy", "docs.yaml", policy.into_bytes()));
    let catalog = std::fs::read(root().join("guest-plugins/catalog.toml")).unwrap();
    out.push(("catalog", "catalog.toml", catalog));

    // A real snapshot record and key record, from a repository.
    let env = Env::init_local();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"one").unwrap();
    env.backup(&src, &["--tag", "seed"]);
    let snap = env.json(&["snapshots"])[0]["snapshot"].to_string();
    out.push(("snapshot_record", "path", snap.into_bytes()));
    let key = env.objects("keys").pop().expect("a key record");
    out.push(("key_record", "password", std::fs::read(key).unwrap()));
    out
}

fn kv_bytes(i: u64) -> Vec<u8> {
    use prost::Message;
    KeyValue {
        key: format!("/registry/configmaps/default/cm{i}").into_bytes(),
        create_revision: i as i64 + 2,
        mod_revision: i as i64 + 2,
        version: 1,
        value: vec![b'x'; 100],
        lease: 0,
    }
    .encode_to_vec()
}

/// What the target named does with a seed, reduced to: does the decoder accept it.
fn accepted(target: &str, seed: &[u8]) -> Result<(), String> {
    let keys = keys();
    let e = |e: &dyn std::fmt::Display| e.to_string();
    match target {
        "pack" => {
            let (mode, rest) = seed.split_first().ok_or("empty")?;
            let mut bytes = vec![0u8; usize::from(*mode) * 64];
            let sealed = keys.seal(Sealed::PackTrailer, rest);
            bytes.extend_from_slice(&sealed);
            bytes.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
            bytes.extend_from_slice(pack::MAGIC);
            pack::parse_whole(&keys, &PackId([0; 32]), &bytes)
                .map(drop)
                .map_err(|x| e(&x))
        }
        "blob" => {
            let (_, rest) = seed.split_first().ok_or("empty")?;
            let sealed = keys.seal(Sealed::Blob, rest);
            let mut opener = ballast::repo::blob::Opener::default();
            match opener.open(&keys, &BlobId([0; 32]), &sealed) {
                // The id is not the content's: getting as far as the hash is success.
                Err(ballast::repo::blob::BlobError::HashMismatch(_)) => Ok(()),
                other => Err(format!("{:?}", other.map(<[u8]>::to_vec))),
            }
        }
        "index" => {
            let (_, rest) = seed.split_first().ok_or("empty")?;
            let sealed = keys.seal(Sealed::Index, &zstd::bulk::compress(rest, 1).unwrap());
            index::decode(&keys, "index/seed", &sealed)
                .map(drop)
                .map_err(|x| e(&x))
        }
        "tree" => Tree::decode(seed).map(drop),
        "delta" => Records::new(seed)
            .map(|r| r.map(drop).map_err(|x| e(&x)))
            .collect::<Result<Vec<()>, String>>()
            .map(drop),
        "bbolt" => {
            let db = Bolt::open(seed).map_err(|x| e(&x))?;
            let mut n = 0;
            db.for_each(b"key", &mut |_, _| n += 1).map_err(|x| e(&x))?;
            if n == 40 {
                Ok(())
            } else {
                Err(format!("{n} keys"))
            }
        }
        "policy" => Policy::parse(std::str::from_utf8(seed).map_err(|x| e(&x))?, None)
            .map(drop)
            .map_err(|x| e(&x)),
        "catalog" => Catalog::parse(
            std::str::from_utf8(seed).map_err(|x| e(&x))?,
            "c.toml".into(),
        )
        .map(drop)
        .map_err(|x| e(&x)),
        "snapshot_record" => serde_json::from_slice::<ballast::repo::snapshot::Snapshot>(seed)
            .map(drop)
            .map_err(|x| e(&x)),
        "key_record" => {
            let r: KeyRecord = serde_json::from_slice(seed).map_err(|x| e(&x))?;
            r.kdf.check()
        }
        other => Err(format!("no such target {other}")),
    }
}

#[test]
fn every_fuzz_target_has_seeds_its_decoder_accepts() {
    if std::env::var_os("BALLAST_WRITE_SEEDS").is_some() {
        for (target, name, bytes) in generate() {
            std::fs::create_dir_all(seeds_dir(target)).unwrap();
            std::fs::write(seeds_dir(target).join(name), bytes).unwrap();
        }
    }
    let targets = std::fs::read_dir(root().join("host/fuzz/fuzz_targets")).unwrap();
    let mut checked = 0;
    for t in targets {
        let name = t
            .unwrap()
            .path()
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let seeds: Vec<_> = std::fs::read_dir(seeds_dir(&name))
            .unwrap_or_else(|e| panic!("no seeds for {name}: {e}"))
            .map(|s| s.unwrap().path())
            .collect();
        assert!(!seeds.is_empty(), "no seeds for {name}");
        for s in seeds {
            let bytes = std::fs::read(&s).unwrap();
            if let Err(why) = accepted(&name, &bytes) {
                panic!("{}: not accepted: {why}", s.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked} seeds");
}
