//! Protobuf schemas: a user's descriptor set (`protoc --include_imports
//! --descriptor_set_out=FILE`), so gRPC messages are read by their field names. The scrubber
//! scrubs a decoded message field by field with the rules JSON members get
//! ([`crate::scrub`]); the replayer compares decoded messages as JSON documents.
//!
//! A gRPC call's path names its method (`/package.Service/Method`); the method names the
//! request's and the response's message types.

use std::path::Path;
use std::sync::Arc;

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor, SerializeOptions};

/// A descriptor set that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct ProtoError {
    /// Where the descriptor set came from (a file name).
    pub origin: String,
    /// What is wrong, and what to do.
    pub message: String,
}

/// How to make a descriptor set, for messages.
pub const MAKE_ONE: &str =
    "make one with `protoc --include_imports --descriptor_set_out=FILE your.proto` (or `buf build -o FILE`)";

/// Which message of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// What the client sends.
    Request,
    /// What the server answers.
    Response,
}

/// The message types of a set of gRPC services. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct ProtoSchema {
    pool: DescriptorPool,
    fingerprint: Arc<str>,
    services: usize,
}

impl ProtoSchema {
    /// Reads a descriptor set file.
    pub fn load(path: &Path) -> Result<ProtoSchema, ProtoError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| ProtoError {
            origin: origin.clone(),
            message: format!("cannot read the descriptor set: {e}; {MAKE_ONE}"),
        })?;
        ProtoSchema::from_bytes(&bytes, &origin)
    }

    /// A descriptor set from its bytes (a serialised `google.protobuf.FileDescriptorSet`).
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<ProtoSchema, ProtoError> {
        let error = |message: String| ProtoError { origin: origin.to_string(), message };
        let text = std::str::from_utf8(&bytes[..bytes.len().min(4096)]).ok().map(str::trim_start);
        if bytes.is_empty() {
            return Err(error(format!("the file is empty; {MAKE_ONE}")));
        }
        if text.is_some_and(|t| t.starts_with("syntax") || t.starts_with("package") || t.starts_with("//")) {
            return Err(error(format!("this is .proto source, not a compiled descriptor set; {MAKE_ONE}")));
        }
        if text.is_some_and(|t| t.starts_with('{')) {
            return Err(error(format!(
                "this is JSON; the descriptor set must be in protobuf's binary form: {MAKE_ONE}"
            )));
        }
        let pool = DescriptorPool::decode(bytes).map_err(|e| {
            error(format!("not a protobuf descriptor set, or one missing its imports ({e}); {MAKE_ONE}"))
        })?;
        let services = pool.services().count();
        if services == 0 {
            return Err(error(format!(
                "the descriptor set defines no gRPC service (only messages: a call's path could not name its types); {MAKE_ONE} from the .proto that declares the service"
            )));
        }
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(bytes);
        Ok(ProtoSchema { pool, fingerprint: hex::encode(&digest[..8]).into(), services })
    }

    /// A short, stable name for this schema (a hash of the file), for tape headers.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// How many services the schema declares.
    pub fn services(&self) -> usize {
        self.services
    }

    /// The method a call's path names (`/package.Service/Method`, a query ignored).
    pub fn method(&self, path: &str) -> Option<MethodDescriptor> {
        let path = path.split(['?', '#']).next()?;
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        let service = self.pool.get_service_by_name(service)?;
        let found = service.methods().find(|m| m.name() == method);
        found
    }

    /// The message type of one side of the call `path` names.
    pub fn message(&self, path: &str, side: Side) -> Option<MessageDescriptor> {
        let method = self.method(path)?;
        Some(match side {
            Side::Request => method.input(),
            Side::Response => method.output(),
        })
    }

    /// A message of type `desc` as JSON (protobuf's JSON mapping, with the field names the
    /// .proto file spells and 64-bit integers as numbers); `None` when the bytes are not
    /// such a message.
    pub fn to_json(desc: &MessageDescriptor, bytes: &[u8]) -> Option<serde_json::Value> {
        // Nesting (an `Any` in an `Any` …) is bounded before the recursive reader sees it.
        if !crate::wire::nested_within(bytes, MAX_WIRE_DEPTH) {
            return None;
        }
        let message = DynamicMessage::decode(desc.clone(), bytes).ok()?;
        let options = SerializeOptions::new().use_proto_field_name(true).stringify_64_bit_integers(false);
        let mut json = message.serialize_with_options(serde_json::value::Serializer, &options).ok()?;
        // Fields the schema does not know (a newer server's) are compared too: by number.
        if message.unknown_fields().next().is_some() {
            let mut raw = Vec::new();
            message.unknown_fields().for_each(|f| f.encode(&mut raw));
            if let (Some(serde_json::Value::Object(unknown)), Some(object)) = (wire_json(&raw), json.as_object_mut()) {
                object.extend(unknown);
            }
        }
        Some(json)
    }
}

/// The messages of a gRPC body as JSON documents, for people to read (`tapedeck cat`): by
/// field name with a schema that has the call (`path`), else by field number
/// ([`wire_json`]); `+json` messages as they are; a message neither reads as
/// `{"base64": …}`. `None` when the body is not gRPC, or not whole frames.
pub fn messages_json(
    schema: Option<&ProtoSchema>,
    path: &str,
    side: Side,
    headers: &crate::Headers,
    body: &crate::Body,
) -> Option<Vec<serde_json::Value>> {
    let content_type = headers.get_str("content-type")?.trim();
    if !crate::wire::is_grpc_content_type(content_type.as_bytes()) || body.data.is_empty() {
        return None;
    }
    let json = content_type.get(16..).is_some_and(|rest| rest.to_ascii_lowercase().starts_with("+json"));
    let encoding = headers.get_str("grpc-encoding").map(|e| e.trim().to_ascii_lowercase());
    let messages = crate::wire::messages(&body.data, encoding.as_deref())?;
    let desc = schema.and_then(|s| s.message(path, side));
    Some(
        messages
            .iter()
            .map(|m| {
                let read = if json {
                    serde_json::from_slice(m).ok()
                } else {
                    match &desc {
                        Some(desc) => ProtoSchema::to_json(desc, m),
                        None => wire_json(m),
                    }
                };
                read.unwrap_or_else(|| {
                    use base64::Engine as _;
                    serde_json::json!({"base64": base64::engine::general_purpose::STANDARD.encode(m)})
                })
            })
            .collect(),
    )
}

/// gRPC status codes by number (grpc/doc/statuscodes.md).
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The name of a gRPC status code (`NOT_FOUND`); `grpc other` beyond the known ones.
pub fn grpc_code_name(code: u32) -> &'static str {
    CODES.get(code as usize).copied().unwrap_or("grpc other")
}

/// The codes that say the server (or what is behind it) failed, the way HTTP's 5xx do:
/// UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
pub fn grpc_server_fault(name: &str) -> bool {
    matches!(name, "UNKNOWN" | "DEADLINE_EXCEEDED" | "UNIMPLEMENTED" | "INTERNAL" | "UNAVAILABLE" | "DATA_LOSS")
}

/// A gRPC call's status: `grpc-status` in the trailers, or in the head of a call that
/// failed at once ("trailers-only"); `None` when it is not a gRPC answer.
pub fn grpc_status(headers: &crate::Headers, trailers: &crate::Headers) -> Option<u32> {
    let value = trailers.get_str("grpc-status").or_else(|| headers.get_str("grpc-status"))?;
    value.trim().parse().ok()
}

/// A message read without a schema, as JSON: fields by number (`{"1": "A-7", "2": {"1":
/// …}, "3": 1999}`), a number seen twice as an array. A length-delimited value is a nested
/// message if it parses as one, else text, else `base64:…`; varints and fixed-width values
/// are unsigned numbers. `None` when the bytes are not a message.
pub fn wire_json(bytes: &[u8]) -> Option<serde_json::Value> {
    wire_object(bytes, 0)
}

/// Nesting read as messages at most (deeper values stay text or bytes).
const MAX_WIRE_DEPTH: usize = 32;

fn wire_object(bytes: &[u8], depth: usize) -> Option<serde_json::Value> {
    use serde_json::Value;
    let fields = crate::wire::parse(bytes)?;
    let mut map = serde_json::Map::new();
    for f in fields {
        let raw = &bytes[f.value.clone()];
        let value = match f.wire {
            0 => {
                let mut v = 0u64;
                for (i, b) in raw.iter().enumerate().take(10) {
                    v |= u64::from(b & 0x7f) << (7 * i);
                }
                Value::from(v)
            }
            1 => Value::from(u64::from_le_bytes(raw.try_into().ok()?)),
            5 => Value::from(u32::from_le_bytes(raw.try_into().ok()?)),
            // Printable text is text (as the scrubber reads it), even if it would parse.
            _ => match std::str::from_utf8(raw).ok().filter(|t| crate::wire::is_printable(t)) {
                Some(text) => Value::String(text.to_string()),
                None => {
                    match (!raw.is_empty() && depth < MAX_WIRE_DEPTH).then(|| wire_object(raw, depth + 1)).flatten() {
                        Some(message) => message,
                        None => match std::str::from_utf8(raw) {
                            Ok(text) => Value::String(text.to_string()),
                            Err(_) => {
                                use base64::Engine as _;
                                Value::String(format!(
                                    "base64:{}",
                                    base64::engine::general_purpose::STANDARD.encode(raw)
                                ))
                            }
                        },
                    }
                }
            },
        };
        match map.entry(f.number.to_string()) {
            serde_json::map::Entry::Vacant(e) => {
                e.insert(value);
            }
            serde_json::map::Entry::Occupied(mut e) => match e.get_mut() {
                Value::Array(items) => items.push(value),
                first => {
                    let first = first.take();
                    e.insert(Value::Array(vec![first, value]));
                }
            },
        }
    }
    // Repeated `{1: key, 2: value}` entries are how a map travels, in no set order: read
    // as an object (by key), two answers with the same entries compare equal.
    for value in map.values_mut() {
        if let Some(entries) = as_map_entries(value) {
            *value = Value::Object(entries);
        }
    }
    Some(serde_json::Value::Object(map))
}

/// `items` as a map, if it is a list of map entries with distinct keys.
fn as_map_entries(items: &serde_json::Value) -> Option<serde_json::Map<String, serde_json::Value>> {
    use serde_json::Value;
    let items = items.as_array()?;
    let mut out = serde_json::Map::new();
    for item in items {
        let entry = item.as_object()?;
        if entry.keys().any(|k| k != "1" && k != "2") {
            return None;
        }
        let key = match entry.get("1")? {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        if out.insert(key, entry.get("2").cloned().unwrap_or(Value::Null)).is_some() {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A descriptor set compiled from `.proto` text (protox: no protoc needed).
    pub(crate) fn compile(proto: &str) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test.proto"), proto).unwrap();
        let set = protox::compile(["test.proto"], [dir.path()]).unwrap();
        prost::Message::encode_to_vec(&set)
    }

    pub(crate) const SHOP: &str = r#"
        syntax = "proto3";
        package shop;
        message Customer { string email = 1; string name = 2; string phone = 3; int64 card = 4; }
        message Order {
          string id = 1;
          Customer customer = 2;
          int64 total_cents = 3;
          string status = 4;
          repeated string notes = 5;
          map<string, string> labels = 6;
          bytes blob = 7;
          string password = 8;
        }
        message GetOrder { string id = 1; string email = 2; }
        service Orders { rpc Get(GetOrder) returns (Order); rpc Watch(GetOrder) returns (stream Order); }
    "#;

    #[test]
    fn methods_are_found_by_path() {
        let schema = ProtoSchema::from_bytes(&compile(SHOP), "shop.pb").unwrap();
        assert_eq!(schema.services(), 1);
        assert_eq!(schema.message("/shop.Orders/Get", Side::Request).unwrap().full_name(), "shop.GetOrder");
        assert_eq!(schema.message("/shop.Orders/Get?x=1", Side::Response).unwrap().full_name(), "shop.Order");
        assert!(schema.method("/shop.Orders/Nope").is_none());
        assert!(schema.method("/other.Orders/Get").is_none());
        assert!(schema.method("shop.Orders/Get").is_none());
        assert!(schema.method("/").is_none());
    }

    #[test]
    fn a_file_that_is_not_a_descriptor_set_is_refused_with_advice() {
        let e = ProtoSchema::from_bytes(b"syntax = \"proto3\";", "shop.proto").unwrap_err();
        assert!(e.to_string().starts_with("shop.proto: this is .proto source"), "{e}");
        let e = ProtoSchema::from_bytes(b"\x0a\xff\xff", "junk.pb").unwrap_err();
        assert!(e.to_string().starts_with("junk.pb: not a protobuf descriptor set"), "{e}");
        let e = ProtoSchema::from_bytes(b"", "empty.pb").unwrap_err();
        assert!(e.to_string().contains("the file is empty"), "{e}");
        assert!(e.to_string().contains("protoc --include_imports"), "{e}");
        let messages_only = compile("syntax = \"proto3\"; message A { string b = 1; }");
        let e = ProtoSchema::from_bytes(&messages_only, "a.pb").unwrap_err();
        assert!(e.to_string().contains("no gRPC service"), "{e}");
        let e = ProtoSchema::load(Path::new("/nonexistent/shop.pb")).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }

    #[test]
    fn messages_read_as_json_by_field_name() {
        let schema = ProtoSchema::from_bytes(&compile(SHOP), "shop.pb").unwrap();
        let desc = schema.message("/shop.Orders/Get", Side::Response).unwrap();
        // id "A1", customer { email "x@y.z" }, total_cents 1999
        let mut bytes = vec![0x0a, 2, b'A', b'1', 0x12, 7, 0x0a, 5];
        bytes.extend_from_slice(b"x@y.z");
        bytes.extend_from_slice(&[0x18, 0xcf, 0x0f]);
        let json = ProtoSchema::to_json(&desc, &bytes).unwrap();
        assert_eq!(json, serde_json::json!({"id": "A1", "customer": {"email": "x@y.z"}, "total_cents": 1999}));
        assert!(ProtoSchema::to_json(&desc, &[0xff, 0xff]).is_none());
        // Without the schema: by field number.
        let mut twice = bytes.clone();
        twice.extend_from_slice(&[0x0a, 2, b'B', b'2', 0x22, 2, 0xff, 0xfe]);
        let json = wire_json(&twice).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"1": ["A1", "B2"], "2": {"1": "x@y.z"}, "3": 1999, "4": "base64://4="}),
            "{json}"
        );
        assert!(wire_json(&[0x0a, 9, 1]).is_none());
        // Map entries (field 6: {1: key, 2: value}) in either order read the same.
        let entry = |k: &str, v: &str| {
            [
                &[0x32, (k.len() + v.len() + 4) as u8, 0x0a, k.len() as u8][..],
                k.as_bytes(),
                &[0x12, v.len() as u8],
                v.as_bytes(),
            ]
            .concat()
        };
        let (a, b) = (
            [entry("tier", "gold"), entry("ref", "ad")].concat(),
            [entry("ref", "ad"), entry("tier", "gold")].concat(),
        );
        assert_eq!(wire_json(&a), wire_json(&b));
        assert_eq!(wire_json(&a).unwrap(), serde_json::json!({"6": {"tier": "gold", "ref": "ad"}}));
    }
}

/// Messages timed at most per body (a stream of millions keeps its first ones).
const MAX_TIMED_MESSAGES: usize = 100_000;

/// Follows gRPC's framing (a flag byte, a 4-byte length, the message) across the chunks of
/// a body as they arrive and notes when each message is complete: the capture's
/// `message_ns`, and the replay's for the same stream.
#[derive(Debug, Default)]
pub struct MessageClock {
    /// The frame prefix read so far.
    prefix: [u8; 5],
    prefix_len: usize,
    /// Bytes of the current message still to come (after a whole prefix).
    remaining: u64,
    /// When each message was complete.
    done_ns: Vec<u64>,
}

impl MessageClock {
    /// Reads `data`, the body's next bytes; a message they complete is dated `now_ns()`.
    pub fn observe(&mut self, mut data: &[u8], now_ns: impl Fn() -> u64) {
        while !data.is_empty() && self.done_ns.len() < MAX_TIMED_MESSAGES {
            if self.prefix_len < 5 {
                let take = (5 - self.prefix_len).min(data.len());
                self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&data[..take]);
                self.prefix_len += take;
                data = &data[take..];
                if self.prefix_len < 5 {
                    return;
                }
                let p = self.prefix;
                self.remaining = u64::from(u32::from_be_bytes([p[1], p[2], p[3], p[4]]));
            }
            let take = self.remaining.min(data.len() as u64);
            self.remaining -= take;
            data = &data[take as usize..];
            if self.remaining == 0 {
                self.done_ns.push(now_ns());
                self.prefix_len = 0;
            }
        }
    }

    /// When each message was complete, in order.
    pub fn into_times(self) -> Vec<u64> {
        self.done_ns
    }
}

#[cfg(test)]
mod message_clock_tests {
    use super::MessageClock;

    #[test]
    fn messages_are_timed_when_whole_however_the_chunks_fall() {
        let frame = |len: u32| [&[0u8][..], &len.to_be_bytes(), &vec![7u8; len as usize]].concat();
        let body = [frame(3), frame(0), frame(10)].concat();
        // Every way of cutting the body into two chunks times the same three messages.
        for cut in 0..=body.len() {
            let mut clock = MessageClock::default();
            let tick = std::cell::Cell::new(0);
            let now = || {
                tick.set(tick.get() + 1);
                tick.get()
            };
            clock.observe(&body[..cut], now);
            clock.observe(&body[cut..], now);
            assert_eq!(clock.into_times().len(), 3, "cut at {cut}");
        }
        // A message is timed when its last byte arrives, not before.
        let mut clock = MessageClock::default();
        clock.observe(&frame(10)[..14], || 1);
        assert!(clock.done_ns.is_empty());
        clock.observe(&frame(10)[14..], || 2);
        assert_eq!(clock.into_times(), [2]);
    }
}
