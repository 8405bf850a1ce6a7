//! One Kubernetes object as ballast keeps it: the JSON the server returned, with its
//! `apiVersion` and `kind` (list items of built-in types come without them),
//! serialized deterministically so that an unchanged object is the same bytes in
//! every backup and deduplicates to nothing.

use serde_json::Value;

/// The label that opts one object out of every backup.
pub const EXCLUDE_LABEL: &str = "ballast.io/exclude";

/// An object's bytes in ballast's form: compact JSON with every object's keys in
/// byte order (serde_json's map is ordered; a test keeps it so).
pub fn canonical(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("a JSON value always serializes")
}

/// Parses a list item and gives it the type it was listed as.
pub fn from_item(raw: &[u8], api_version: &str, kind: &str) -> Result<Value, String> {
    let mut v: Value = serde_json::from_slice(raw).map_err(|e| format!("not JSON: {e}"))?;
    let m = v.as_object_mut().ok_or("not a JSON object")?;
    m.entry("apiVersion")
        .or_insert_with(|| Value::String(api_version.to_string()));
    m.entry("kind")
        .or_insert_with(|| Value::String(kind.to_string()));
    Ok(v)
}

pub fn name(v: &Value) -> Option<&str> {
    v["metadata"]["name"].as_str()
}

pub fn namespace(v: &Value) -> Option<&str> {
    v["metadata"]["namespace"]
        .as_str()
        .filter(|n| !n.is_empty())
}

pub fn label<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v["metadata"]["labels"][key].as_str()
}

/// Whether the object opted out with `ballast.io/exclude=true`.
pub fn excluded(v: &Value) -> bool {
    label(v, EXCLUDE_LABEL) == Some("true")
}

/// `metadata.creationTimestamp` in nanoseconds since the epoch (0 if absent), the
/// modification time an object's file gets.
pub fn created_ns(v: &Value) -> i64 {
    v["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_nanosecond() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_same_object_is_the_same_bytes_whatever_order_its_keys_came_in() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"z":[3,{"y":1,"x":2}],"c":"s"}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a":{"c":"s","z":[3,{"x":2,"y":1}]},"b":1}"#).unwrap();
        assert_eq!(canonical(&a), canonical(&b));
        // If this fails, serde_json's `preserve_order` feature was turned on by some
        // dependency: objects would no longer deduplicate across backups.
        assert_eq!(
            canonical(&a),
            br#"{"a":{"c":"s","z":[3,{"x":2,"y":1}]},"b":1}"#
        );
    }

    #[test]
    fn list_items_get_their_type() {
        let v = from_item(br#"{"metadata":{"name":"a"}}"#, "v1", "ConfigMap").unwrap();
        assert_eq!(v["kind"], "ConfigMap");
        let v = from_item(
            br#"{"apiVersion":"x.io/v2","kind":"W","metadata":{}}"#,
            "x.io/v1",
            "W",
        )
        .unwrap();
        assert_eq!(v["apiVersion"], "x.io/v2");
        assert!(from_item(b"[1]", "v1", "X").is_err());
        assert!(excluded(
            &json!({"metadata": {"labels": {EXCLUDE_LABEL: "true"}}})
        ));
        assert_eq!(
            created_ns(&json!({"metadata": {"creationTimestamp": "1970-01-01T00:00:01Z"}})),
            1_000_000_000
        );
    }
}
