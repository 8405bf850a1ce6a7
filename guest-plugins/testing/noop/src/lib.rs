//! Does nothing, successfully: the plugin the runtime's benchmarks and smoke tests
//! load. Its dump is the bytes of the parameter `payload` (empty by default).

use ballast_plugin_sdk::{self as sdk, Error, Info, Plugin, Sink, Source};

struct Noop;

impl Plugin for Noop {
    fn info() -> Info {
        sdk::info(
            "noop",
            env!("CARGO_PKG_VERSION"),
            "does nothing (tests)",
            &[],
        )
    }

    fn backup(_target: &str, out: &Sink) -> Result<(), Error> {
        out.write(sdk::param("payload").unwrap_or_default().as_bytes())
    }

    fn restore(_target: &str, input: &Source) -> Result<(), Error> {
        while !input.read(1 << 16)?.is_empty() {}
        Ok(())
    }

    fn verify(input: &Source) -> Result<(), Error> {
        let mut n = 0;
        loop {
            let chunk = input.read(1 << 16)?;
            if chunk.is_empty() {
                break;
            }
            n += chunk.len();
        }
        sdk::log(format!("{n} bytes"));
        Ok(())
    }
}

sdk::plugin!(Noop);
