//! Built against `ballast:plugin@0.2.0`, which no host serves yet: the host must
//! refuse it and name the versions it supports.

wit_bindgen::generate!({ path: "wit", world: "plugin" });

struct WrongVersion;

impl exports::ballast::plugin::hooks::Guest for WrongVersion {
    fn info() -> String {
        "wrong-version".into()
    }
}

export!(WrongVersion);
