//! An ordinary WASI command, not a ballast plugin: the host must refuse it.

fn main() {
    println!("hello from a command");
}
