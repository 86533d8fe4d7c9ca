//! Schema-level validation: checks a JSON object against a CRD's OpenAPI v3 schema the way the
//! API server would (types, enums, bounds, lengths, item and property counts, required and unknown
//! fields, list-type set/map uniqueness, patterns), plus the CEL rules Palisade's schemas use.
//!
//! Why here and not only in the API server: the operator and its tests need the same verdict
//! without a cluster, with the JSON path of each violation. Semantic checks (does the CIDR make
//! sense, are priorities unique) belong to the engine.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::OnceLock;

use serde_json::{Map, Value};

use crate::cnp::ClusterNetworkPolicy;

/// One schema violation, at a JSON path such as `spec.ingress[0].action`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The generated schema of ClusterNetworkPolicy, computed once.
pub fn cluster_network_policy_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| crate::openapi_schema(&crate::crd::<ClusterNetworkPolicy>()).clone())
}

/// Validates a typed ClusterNetworkPolicy (as it would be sent) against the generated schema.
pub fn cluster_network_policy(cnp: &ClusterNetworkPolicy) -> Vec<Violation> {
    match serde_json::to_value(cnp) {
        Ok(value) => cluster_network_policy_value(&value),
        Err(e) => vec![Violation { path: String::new(), message: format!("cannot serialize: {e}") }],
    }
}

/// Validates raw JSON (e.g. a manifest or an admission request) against the generated schema.
pub fn cluster_network_policy_value(instance: &Value) -> Vec<Violation> {
    against_schema(cluster_network_policy_schema(), instance)
}

/// Validates `instance` against an OpenAPI v3 `schema` (a CRD's `openAPIV3Schema`).
pub fn against_schema(schema: &Value, instance: &Value) -> Vec<Violation> {
    let mut violations = Vec::new();
    check(schema, instance, "", &mut violations);
    violations
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() { field.to_owned() } else { format!("{path}.{field}") }
}

fn check(schema: &Value, value: &Value, path: &str, out: &mut Vec<Violation>) {
    let mut fail = |message: String| out.push(Violation { path: path.to_owned(), message });
    // The API server prunes nulls of non-nullable fields instead of rejecting them.
    if value.is_null() {
        return;
    }
    if let Some(expected) = schema.get("type").and_then(Value::as_str) {
        let matches = match expected {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !matches {
            return fail(format!("expected {expected}, got {value}"));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let names: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
        fail(format!("unsupported value {value}: supported values: {}", names.join(", ")));
    }
    match value {
        Value::String(text) => check_string(schema, text, &mut fail),
        Value::Number(_) => check_number(schema, value, &mut fail),
        Value::Array(items) => check_array(schema, items, path, out),
        Value::Object(fields) => check_object(schema, fields, path, out),
        _ => {}
    }
    for rule in schema.get("x-kubernetes-validations").and_then(Value::as_array).into_iter().flatten() {
        let expression = rule.get("rule").and_then(Value::as_str).unwrap_or_default();
        let message = rule.get("message").and_then(Value::as_str).unwrap_or(expression);
        match evaluate_cel(expression, value) {
            Some(true) => {}
            Some(false) => out.push(Violation { path: path.to_owned(), message: message.to_owned() }),
            None => out.push(Violation {
                path: path.to_owned(),
                message: format!("CEL rule not supported by this validator: {expression}"),
            }),
        }
    }
}

fn check_string(schema: &Value, text: &str, fail: &mut impl FnMut(String)) {
    let length = text.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && length > max
    {
        fail(format!("may not be longer than {max} characters"));
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && length < min
    {
        fail(format!("must be at least {min} characters"));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match compiled(pattern) {
            Ok(re) if re.is_match(text) => {}
            Ok(_) => fail(format!("{text:?} does not match {pattern}")),
            Err(e) => fail(format!("schema pattern {pattern} does not compile: {e}")),
        }
    }
}

/// A schema pattern, compiled once per process: the schema's few patterns are checked for every
/// string of every object, and compiling a regex costs far more than matching it.
fn compiled(pattern: &str) -> Result<regex::Regex, String> {
    static PATTERNS: OnceLock<std::sync::Mutex<std::collections::HashMap<String, Result<regex::Regex, String>>>> =
        OnceLock::new();
    let mut patterns = PATTERNS.get_or_init(Default::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    patterns.entry(pattern.to_owned()).or_insert_with(|| regex::Regex::new(pattern).map_err(|e| e.to_string())).clone()
}

fn check_number(schema: &Value, value: &Value, fail: &mut impl FnMut(String)) {
    let Some(number) = value.as_f64() else { return };
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && number < min
    {
        fail(format!("should be greater than or equal to {min}"));
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
        && number > max
    {
        fail(format!("should be less than or equal to {max}"));
    }
    let fits = match schema.get("format").and_then(Value::as_str) {
        Some("int32") => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
        Some("int64") => value.is_i64(),
        _ => true,
    };
    if !fits {
        fail("out of range for its integer format".into());
    }
}

fn check_array(schema: &Value, items: &[Value], path: &str, out: &mut Vec<Violation>) {
    let count = items.len() as u64;
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && count > max
    {
        out.push(Violation { path: path.to_owned(), message: format!("must have at most {max} items") });
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && count < min
    {
        out.push(Violation { path: path.to_owned(), message: format!("must have at least {min} items") });
    }
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            let mut seen = BTreeSet::new();
            for (index, item) in items.iter().enumerate() {
                if !seen.insert(item.to_string()) {
                    out.push(Violation {
                        path: format!("{path}[{index}]"),
                        message: format!("duplicate value {item}"),
                    });
                }
            }
        }
        Some("map") => {
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut seen = BTreeSet::new();
            for (index, item) in items.iter().enumerate() {
                let key: Vec<String> =
                    keys.iter().map(|k| item.get(*k).map(Value::to_string).unwrap_or_default()).collect();
                if !seen.insert(key.clone()) {
                    out.push(Violation {
                        path: format!("{path}[{index}]"),
                        message: format!("duplicate entry for key {}", key.join(",")),
                    });
                }
            }
        }
        _ => {}
    }
    if let Some(item_schema) = schema.get("items") {
        for (index, item) in items.iter().enumerate() {
            check(item_schema, item, &format!("{path}[{index}]"), out);
        }
    }
}

fn check_object(schema: &Value, fields: &Map<String, Value>, path: &str, out: &mut Vec<Violation>) {
    let present = fields.values().filter(|v| !v.is_null()).count() as u64;
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
        && present > max
    {
        out.push(Violation { path: path.to_owned(), message: format!("must have at most {max} properties") });
    }
    if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
        && present < min
    {
        out.push(Violation { path: path.to_owned(), message: format!("must have at least {min} properties") });
    }
    for name in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        if fields.get(name).is_none_or(Value::is_null) {
            out.push(Violation { path: join(path, name), message: "Required value".into() });
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let preserve_unknown = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    for (name, field) in fields {
        let field_path = join(path, name);
        if let Some(field_schema) = properties.and_then(|p| p.get(name)) {
            check(field_schema, field, &field_path, out);
        } else if let Some(value_schema) = additional.filter(|a| a.is_object()) {
            check(value_schema, field, &field_path, out);
        } else if properties.is_some() && !preserve_unknown && additional != Some(&Value::Bool(true)) {
            // The API server would prune it silently; a manifest that relies on it is wrong.
            out.push(Violation { path: field_path, message: "unknown field".into() });
        }
    }
}

/// The CEL rules Palisade's schemas carry. `None`: a rule this validator cannot evaluate,
/// reported as a violation so a new rule cannot go unchecked.
fn evaluate_cel(rule: &str, value: &Value) -> Option<bool> {
    match rule {
        "self.start < self.end" => {
            let start = value.get("start")?.as_i64()?;
            let end = value.get("end")?.as_i64()?;
            Some(start < end)
        }
        "isCIDR(self)" => Some(value.as_str().is_some_and(is_cidr)),
        _ if rule.starts_with("!(self.to.exists(peer, has(peer.networks)") => {
            let has = |v: &Value, field: &str| v.get(field).is_some_and(|f| !f.is_null());
            let peers = value.get("to").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            let protocols = value.get("protocols").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            let non_pod_peer = peers.iter().any(|p| has(p, "networks") || has(p, "nodes") || has(p, "domainNames"));
            let named_port = protocols.iter().any(|p| has(p, "destinationNamedPort"));
            Some(!(non_pod_peer && named_port))
        }
        _ => None,
    }
}

/// CEL's `isCIDR`: an IPv4 or IPv6 address (no zone, no leading zeros) and a decimal prefix
/// length within the family's width. Host bits may be set, as in Go's `netip.ParsePrefix`.
pub fn is_cidr(text: &str) -> bool {
    let Some((address, prefix)) = text.split_once('/') else { return false };
    let Ok(address) = address.parse::<IpAddr>() else { return false };
    let canonical_prefix =
        !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit()) && (prefix == "0" || !prefix.starts_with('0'));
    let width = if address.is_ipv4() { 32 } else { 128 };
    canonical_prefix && prefix.parse::<u32>().is_ok_and(|p| p <= width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing_follows_cel() {
        for good in ["10.0.0.0/8", "10.0.0.1/8", "0.0.0.0/0", "::/0", "2001:db8::/32", "fd00::1/128"] {
            assert!(is_cidr(good), "{good}");
        }
        for bad in [
            "10.0.0.300/24",
            "10.0.0.0",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/+8",
            "10.0.0.0/08",
            "010.0.0.0/8",
            "x/8",
            "",
        ] {
            assert!(!is_cidr(bad), "{bad}");
        }
    }
}
