//! A real Azure Blob endpoint on loopback: Azurite (the Azure Storage emulator, from
//! npm), one per test, with its well-known development account. Containers are made
//! with the `azure-storage-blob` Python package. Stopped and removed on drop.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Azurite's fixed development account (public, documented by Microsoft).
const ACCOUNT: &str = "devstoreaccount1";
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    pub url: String,
    child: Child,
    _dir: TempDir,
}

fn azurite_bin() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("azurite-blob"))
        .find(|p| p.exists());
    found.expect("azurite-blob not found: install it with `npm install -g azurite` (.ci/run does)")
}

impl Azurite {
    pub fn start() -> Azurite {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("azurite.log")).unwrap();
        let child = Command::new(azurite_bin())
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port.to_string(),
                "--silent",
                "--skipApiVersionCheck",
            ])
            .arg("--location")
            .arg(dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting azurite");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "azurite did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        Azurite {
            url,
            child,
            _dir: dir,
        }
    }

    pub fn create_container(&self, name: &str) {
        let conn = format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={}/{ACCOUNT};",
            self.url
        );
        let script = format!(
            "from azure.storage.blob import BlobServiceClient\nBlobServiceClient.from_connection_string({conn:?}).create_container({name:?})"
        );
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .output()
            .expect("running python3");
        assert!(
            out.status.success(),
            "creating container {name} failed (pip install azure-storage-blob?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The environment that points object_store's Azure client at this emulator.
    pub fn vars(&self) -> Vec<(String, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR".into(), "true".into()),
            ("AZURITE_BLOB_STORAGE_URL".into(), self.url.clone()),
        ]
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
