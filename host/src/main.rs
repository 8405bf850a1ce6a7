//! The `ballast` binary: everything lives in the library's `cli` module.

fn main() {
    std::process::exit(ballast::cli::main());
}
