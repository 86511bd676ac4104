//! Protobuf messages read by their schema (`--proto-descriptor`): every field is scrubbed
//! by its name with the rules a JSON member of that name gets — key rules (`email`,
//! `password` …), JSON paths over field names (`$.customer.email`), header-named fields,
//! a person's `name` beside their e-mail, the detectors for everything else — and the
//! message is encoded again.
//!
//! A field keeps its type. A string or bytes field gets the rule's token; a number, a
//! message or a map a rule selects can hold no token and is removed (a number becomes 0,
//! which protobuf does not even send), as `drop` removes any field. A list takes its
//! elements' fate: strings each get a token, and a list of anything else goes whole. This
//! keeps scrubbing idempotent and `scrub --check` able to tell. Maps are read as JSON objects:
//! an entry's key is its name (`labels["email"]` gets the `email` rule), and a map with an
//! `email` key describes a person as an object would. Well-known wrappers
//! (`StringValue` …), `Struct`, `Value` and `ListValue` are read through to their values,
//! under the name of the field holding them. An `google.protobuf.Any` is read by the type
//! it names when the schema has it; proto2 extensions by their names. Fields the schema
//! does not know (a newer client) and bytes fields with no rule are walked as messages
//! without a schema ([`super::raw`]); unknown groups are dropped. Nesting past
//! [`crate::wire::MAX_DEPTH`] is not read at all (the body is unparsed).

use std::borrow::Cow;

use prost::Message as _;
use prost_reflect::{DynamicMessage, MapKey, MessageDescriptor, ReflectMessage as _, Value};

use crate::scrub::action::Action;
use crate::scrub::jsonpath::Step;
use crate::scrub::Pass;

/// `message` (of type `desc`) scrubbed; `Ok(None)` when nothing changed, `Err(())` when
/// the bytes are not a message of that type.
pub(crate) fn scrub(pass: &mut Pass<'_>, desc: &MessageDescriptor, message: &[u8]) -> Result<Option<Vec<u8>>, ()> {
    // The walk recurses into each `Any` it can read: nesting is bounded first.
    if !crate::wire::nested_within(message, crate::wire::MAX_DEPTH) {
        return Err(());
    }
    let mut msg = DynamicMessage::decode(desc.clone(), message).map_err(|_| ())?;
    let mut path = Vec::new();
    let changed = walk(pass, &mut msg, &mut path);
    // Encoded again even when no field changed, if that changes the bytes: what decoding
    // dropped (a field sent twice keeps its last value, a oneof its last member, a map its
    // last entry per key) must not reach the disk in the original bytes. (Map entries come
    // out in no fixed order: the same content may be new bytes each time.)
    let out = msg.encode_to_vec();
    Ok((changed || out != message).then_some(out))
}

type Path = Vec<Step<'static>>;

/// Scrubs the fields of `msg`; true when any changed.
fn walk(pass: &mut Pass<'_>, msg: &mut DynamicMessage, path: &mut Path) -> bool {
    let mut changed = false;
    if msg.descriptor().full_name() == "google.protobuf.Any" {
        if let Some(c) = any(pass, msg, path) {
            return c;
        }
    }
    let fields: Vec<_> = msg.fields().map(|(f, _)| f).collect();
    let extensions: Vec<_> = msg.extensions().map(|(e, _)| e).collect();
    // A message with an `email`, `phone` … field describes a person: its `name` is theirs.
    let mut names = fields.iter().map(|f| f.name()).chain(extensions.iter().map(|e| e.name()));
    let person = names.any(|n| pass.key_info(n).person_sibling);
    for field in &fields {
        path.push(Step::Key(Cow::Owned(field.name().to_string())));
        match named(pass, field.name(), msg.get_field_mut(field), path, person) {
            Outcome::Kept => {}
            Outcome::Changed => changed = true,
            Outcome::Remove => {
                msg.clear_field(field);
                changed = true;
            }
        }
        path.pop();
    }
    // proto2 extensions, by their names.
    for ext in &extensions {
        path.push(Step::Key(Cow::Owned(ext.name().to_string())));
        match named(pass, ext.name(), msg.get_extension_mut(ext), path, person) {
            Outcome::Kept => {}
            Outcome::Changed => changed = true,
            Outcome::Remove => {
                msg.clear_extension(ext);
                changed = true;
            }
        }
        path.pop();
    }
    changed | unknown_fields(pass, msg)
}

/// The field that holds a well-known wrapper's value (`google.protobuf.StringValue`,
/// `Value` …): such a message is its value, under the name of the field holding it.
fn wrapped(msg: &DynamicMessage) -> Option<prost_reflect::FieldDescriptor> {
    let desc = msg.descriptor();
    let name = desc.full_name().strip_prefix("google.protobuf.")?;
    match name {
        "DoubleValue" | "FloatValue" | "Int64Value" | "UInt64Value" | "Int32Value" | "UInt32Value" | "BoolValue"
        | "StringValue" | "BytesValue" => desc.get_field_by_name("value"),
        // The member of its `kind` that is set.
        "Value" => msg.fields().map(|(f, _)| f).next(),
        "ListValue" => desc.get_field_by_name("values"),
        "Struct" => desc.get_field_by_name("fields"),
        _ => None,
    }
}

/// A wrapper's value, under `name`: its fate is the wrapper's.
fn through_wrapper(
    pass: &mut Pass<'_>,
    name: &str,
    msg: &mut DynamicMessage,
    path: &mut Path,
    person: bool,
    rule: Option<(Action, &str)>,
) -> Option<Outcome> {
    let inner = wrapped(msg)?;
    let value = msg.get_field_mut(&inner);
    let outcome = match rule {
        Some((action, label)) => ruled(pass, action, label, value),
        None => named(pass, name, value, path, person),
    };
    Some(match outcome {
        Outcome::Remove => {
            msg.clear_field(&inner);
            Outcome::Changed
        }
        other => other,
    })
}

/// What became of a value.
enum Outcome {
    Kept,
    Changed,
    /// The field (or entry) must go: a `drop` rule, or a rule whose token no field of this
    /// type can hold.
    Remove,
}

/// A value under the name `name` (a field's, or a map entry's key): its name's rule, or
/// the detectors.
fn named(pass: &mut Pass<'_>, name: &str, value: &mut Value, path: &mut Path, person: bool) -> Outcome {
    let info = pass.key_info(name);
    let by_path = if info.path_name { path_rule(pass, path) } else { None };
    let rule = by_path.or_else(|| info.rule.as_ref().map(|(a, l)| (*a, l.to_string())));
    match rule {
        Some((Action::Keep, _)) => Outcome::Kept,
        Some((Action::Drop, label)) => {
            pass.hit(&label);
            Outcome::Remove
        }
        Some((action, label)) => ruled(pass, action, &label, value),
        None if person && info.person_name && is_text(value) => ruled(pass, Action::Hash, "json-person:name", value),
        None => match value {
            // `StringValue name`, a `Value` in a `Struct`: the name is the wrapper's.
            Value::Message(m) if wrapped(m).is_some() => {
                through_wrapper(pass, name, m, path, person, None).unwrap_or(Outcome::Kept)
            }
            _ => free(pass, name, value, path),
        },
    }
}

/// A string, or a well-known wrapper of one.
fn is_text(value: &Value) -> bool {
    match value {
        Value::String(_) => true,
        Value::Message(m) => wrapped(m).is_some_and(|f| m.get_field(&f).as_str().is_some()),
        Value::List(items) => items.iter().all(is_text) && !items.is_empty(),
        _ => false,
    }
}

fn path_rule(pass: &Pass<'_>, path: &Path) -> Option<(Action, String)> {
    let policy = &pass.scrubber.policy;
    policy.json_paths.iter().find(|(p, _)| p.matches(path)).map(|(p, a)| (*a, format!("json-path:{p}")))
}

/// A value a rule selected, replaced by the rule's action in a form its type can hold.
fn ruled(pass: &mut Pass<'_>, action: Action, label: &str, value: &mut Value) -> Outcome {
    let kind = label.rsplit(['.', ':']).next().unwrap_or("value").trim_end_matches(']');
    match value {
        Value::String(s) => match pass.apply(action, kind, s, label) {
            Some(new) => {
                *s = new;
                Outcome::Changed
            }
            None => Outcome::Kept,
        },
        Value::Bytes(b) => match pass.apply(action, kind, &String::from_utf8_lossy(b), label) {
            Some(new) => {
                *b = new.into_bytes().into();
                Outcome::Changed
            }
            None => Outcome::Kept,
        },
        Value::List(items) => {
            let mut outcome = Outcome::Kept;
            for item in items.iter_mut() {
                match ruled(pass, action, label, item) {
                    Outcome::Kept => {}
                    Outcome::Changed => outcome = Outcome::Changed,
                    Outcome::Remove => return Outcome::Remove,
                }
            }
            outcome
        }
        // Nothing personal in a truth value or an enum's number (as in JSON).
        Value::Bool(_) | Value::EnumNumber(_) => Outcome::Kept,
        Value::Message(m) if wrapped(m).is_some() => {
            let mut path = Vec::new();
            through_wrapper(pass, "", m, &mut path, false, Some((action, label))).unwrap_or(Outcome::Kept)
        }
        Value::Message(_) | Value::Map(_) => {
            pass.hit(label);
            Outcome::Remove
        }
        // A number can hold no token: it goes (0, protobuf's default, is not even sent).
        number => match number_text(number) {
            Some(text) if text != "0" && text != "-0" => {
                pass.hit(label);
                Outcome::Remove
            }
            _ => Outcome::Kept,
        },
    }
}

/// A value no rule selected: strings meet the detectors (and the name's meaning, as a
/// header's name or a secret's), messages and lists are walked, long numbers are checked
/// for card numbers, bytes are read as a message or text without a schema.
fn free(pass: &mut Pass<'_>, name: &str, value: &mut Value, path: &mut Path) -> Outcome {
    match value {
        Value::String(s) => match pass.free_value(Some(name), s) {
            Some(new) => {
                *s = new;
                Outcome::Changed
            }
            None => Outcome::Kept,
        },
        Value::Bytes(b) => match super::raw::scrub_value(pass, b, 0) {
            Some(new) => {
                *b = new.into();
                Outcome::Changed
            }
            None => Outcome::Kept,
        },
        Value::Message(m) => changed(walk(pass, m, path)),
        Value::List(items) => {
            let mut any = false;
            let mut i = 0;
            items.retain_mut(|item| {
                path.push(Step::Index(i));
                i += 1;
                let keep = match free(pass, name, item, path) {
                    Outcome::Kept => true,
                    Outcome::Changed => {
                        any = true;
                        true
                    }
                    Outcome::Remove => {
                        any = true;
                        false
                    }
                };
                path.pop();
                keep
            });
            changed(any)
        }
        Value::Map(map) => {
            let mut any = false;
            let entries: Vec<_> = map.drain().collect();
            // A map like `{"name": …, "email": …}` describes a person, as an object would.
            let person = entries.iter().any(|(k, _)| matches!(k, MapKey::String(k) if pass.key_info(k).person_sibling));
            for (key, mut item) in entries {
                let key = match key {
                    // Keys can be personal too (a map keyed by e-mail address).
                    MapKey::String(k) => match pass.detect_text(&k) {
                        Some(new) => {
                            any = true;
                            MapKey::String(new)
                        }
                        None => MapKey::String(k),
                    },
                    // A map keyed by card number: the entry goes.
                    MapKey::I64(n)
                        if n.unsigned_abs() >= 1_000_000_000_000 && pass.detect_text(&n.to_string()).is_some() =>
                    {
                        any = true;
                        continue;
                    }
                    MapKey::U64(n) if n >= 1_000_000_000_000 && pass.detect_text(&n.to_string()).is_some() => {
                        any = true;
                        continue;
                    }
                    other => other,
                };
                let entry_name = match &key {
                    MapKey::String(k) => k.clone(),
                    _ => name.to_string(),
                };
                path.push(Step::Key(Cow::Owned(entry_name.clone())));
                let outcome = named(pass, &entry_name, &mut item, path, person);
                path.pop();
                match outcome {
                    Outcome::Kept => {
                        map.insert(key, item);
                    }
                    Outcome::Changed => {
                        any = true;
                        map.insert(key, item);
                    }
                    Outcome::Remove => any = true,
                }
            }
            changed(any)
        }
        Value::I64(_) | Value::U64(_) | Value::F64(_) => {
            // A card number stored as a number is still a card number.
            let text = match value {
                Value::F64(f) if f.fract() == 0.0 && f.abs() < 1e20 => Some(format!("{:.0}", f.abs())),
                Value::F64(_) => None,
                other => number_text(other),
            };
            let Some(text) = text.filter(|t| t.len() >= 13) else { return Outcome::Kept };
            match pass.detect_text(&text) {
                Some(_) => Outcome::Remove,
                None => Outcome::Kept,
            }
        }
        _ => Outcome::Kept,
    }
}

fn changed(any: bool) -> Outcome {
    if any {
        Outcome::Changed
    } else {
        Outcome::Kept
    }
}

fn number_text(v: &Value) -> Option<String> {
    Some(match v {
        Value::I32(n) => n.to_string(),
        Value::I64(n) => n.to_string(),
        Value::U32(n) => n.to_string(),
        Value::U64(n) => n.to_string(),
        Value::F32(n) => n.to_string(),
        Value::F64(n) => n.to_string(),
        _ => return None,
    })
}

/// A `google.protobuf.Any` whose type the schema knows: its `value` decoded, walked and
/// encoded again; `None` when the type is unknown (walked as an ordinary message).
fn any(pass: &mut Pass<'_>, msg: &mut DynamicMessage, path: &mut Path) -> Option<bool> {
    let type_url = msg.get_field_by_name("type_url")?.as_str()?.to_string();
    let name = type_url.rsplit('/').next()?;
    let desc = msg.descriptor().parent_pool().get_message_by_name(name)?;
    let value = msg.get_field_by_name("value")?.as_bytes()?.clone();
    let mut inner = DynamicMessage::decode(desc, value).ok()?;
    let changed = walk(pass, &mut inner, path);
    if changed {
        msg.set_field_by_name("value", Value::Bytes(inner.encode_to_vec().into()));
    }
    Some(changed)
}

/// Fields the schema does not name (a newer client's), scrubbed without a schema.
fn unknown_fields(pass: &mut Pass<'_>, msg: &mut DynamicMessage) -> bool {
    if msg.unknown_fields().next().is_none() {
        return false;
    }
    let mut raw = Vec::new();
    for field in msg.take_unknown_fields() {
        field.encode(&mut raw);
    }
    if crate::wire::parse(&raw).is_none() {
        // Groups, which the wire walk does not read: they go, rather than pass unread.
        pass.hit("grpc:unknown-fields-dropped");
        return true;
    }
    let scrubbed = super::raw::scrub_raw(pass, &raw);
    let changed = scrubbed.is_some();
    let bytes = scrubbed.unwrap_or(raw);
    // Merged back, they are unknown fields again (their numbers are not the schema's).
    let _ = msg.merge(&bytes[..]);
    changed
}

#[cfg(test)]
mod tests {
    use prost_reflect::DynamicMessage;

    use super::*;
    use crate::exchange::{Body, Exchange, Headers, Request, Response};
    use crate::proto::tests::{compile, SHOP};
    use crate::proto::{ProtoSchema, Side};
    use crate::scrub::Scrubber;

    fn schema() -> ProtoSchema {
        ProtoSchema::from_bytes(&compile(SHOP), "shop.pb").unwrap()
    }

    fn scrubber(policy: Option<&str>) -> Scrubber {
        let policy = match policy {
            Some(text) => crate::scrub::policy::Policy::parse(text, "test.toml").unwrap().over_defaults(),
            None => crate::scrub::policy::Policy::defaults(),
        };
        Scrubber::new(&policy, Some(b"a key for the protobuf tests 0123456789")).with_proto(schema())
    }

    /// An order of jane's, as production would answer it.
    fn order(schema: &ProtoSchema) -> DynamicMessage {
        let desc = schema.message("/shop.Orders/Get", Side::Response).unwrap();
        let customer_desc = desc.get_field_by_name("customer").unwrap().kind();
        let mut customer = DynamicMessage::new(customer_desc.as_message().unwrap().clone());
        customer.set_field_by_name("email", Value::String("jane.doe@example.com".into()));
        customer.set_field_by_name("name", Value::String("Jane Doe".into()));
        customer.set_field_by_name("phone", Value::String("+44 20 7946 0958".into()));
        customer.set_field_by_name("card", Value::I64(4111111111111111));
        let mut order = DynamicMessage::new(desc);
        order.set_field_by_name("id", Value::String("A-1001".into()));
        order.set_field_by_name("customer", Value::Message(customer));
        order.set_field_by_name("total_cents", Value::I64(1999));
        order.set_field_by_name("status", Value::String("shipped".into()));
        order.set_field_by_name(
            "notes",
            Value::List(vec![Value::String("leave at door".into()), Value::String("text jane@example.org".into())]),
        );
        let mut labels = std::collections::HashMap::new();
        labels.insert(MapKey::String("email".into()), Value::String("ops@example.net".into()));
        labels.insert(MapKey::String("tier".into()), Value::String("gold".into()));
        order.set_field_by_name("labels", Value::Map(labels));
        order.set_field_by_name("blob", Value::Bytes(b"contact: jane.doe@example.com".to_vec().into()));
        order.set_field_by_name("password", Value::String("hunter2hunter2".into()));
        order
    }

    fn frame(message: &[u8]) -> Vec<u8> {
        [&[0][..], &(message.len() as u32).to_be_bytes(), message].concat()
    }

    fn exchange(target: &str, answer: &[u8]) -> Exchange {
        let mut h = Headers::new();
        h.push("content-type", "application/grpc");
        Exchange {
            request: Request {
                method: "POST".into(),
                target: target.into(),
                headers: h.clone(),
                body: Body::full(frame(&[0x0a, 3, b'A', b'-', b'1'])),
                ..Default::default()
            },
            response: Some(Response { status: 200, headers: h, body: Body::full(answer), ..Default::default() }),
            ..Default::default()
        }
    }

    fn answer(ex: &Exchange) -> DynamicMessage {
        let data = &ex.response.as_ref().unwrap().body.data;
        let desc = schema().message("/shop.Orders/Get", Side::Response).unwrap();
        DynamicMessage::decode(desc, &data[5..]).expect("still an Order")
    }

    fn field<'m>(m: &'m DynamicMessage, name: &str) -> std::borrow::Cow<'m, Value> {
        m.get_field_by_name(name).unwrap()
    }

    #[test]
    fn fields_are_scrubbed_by_name_and_keep_their_types() {
        let s = scrubber(None);
        let original = order(&schema()).encode_to_vec();
        let mut ex = exchange("/shop.Orders/Get", &frame(&original));
        s.scrub(&mut ex);
        let out = answer(&ex);
        let customer = field(&out, "customer").as_message().unwrap().clone();
        let email = field(&customer, "email").as_str().unwrap().to_string();
        assert!(email.starts_with("tok_email_"), "hashed by the `email` rule: {email}");
        let name = field(&customer, "name").as_str().unwrap().to_string();
        assert!(name.starts_with("tok_name_"), "a person's name beside their e-mail: {name}");
        assert!(!field(&customer, "phone").as_str().unwrap().contains("7946"));
        assert!(!customer.has_field_by_name("card"), "a card number in an int64 can hold no token: removed");
        assert_eq!(field(&out, "id").as_str(), Some("A-1001"));
        assert_eq!(field(&out, "status").as_str(), Some("shipped"));
        assert_eq!(field(&out, "total_cents").as_i64(), Some(1999));
        let notes = field(&out, "notes");
        let notes = notes.as_list().unwrap();
        assert_eq!(notes[0].as_str(), Some("leave at door"));
        assert!(!notes[1].as_str().unwrap().contains("jane@"), "{notes:?}");
        let labels = field(&out, "labels");
        let labels = labels.as_map().unwrap();
        let ops = labels[&MapKey::String("email".into())].as_str().unwrap();
        assert!(ops.starts_with("tok_email_"), "a map entry gets its key's rule: {ops}");
        assert_eq!(labels[&MapKey::String("tier".into())].as_str(), Some("gold"));
        assert!(!String::from_utf8_lossy(field(&out, "blob").as_bytes().unwrap()).contains("jane.doe"));
        assert_eq!(field(&out, "password").as_str(), Some(crate::scrub::action::REDACTED));
        // The same e-mail gives the same token as in JSON (joins across formats survive).
        assert_eq!(email, s.scrub_value("$.email", "jane.doe@example.com"));
        // Idempotent (in content: map entries may change places), and the audit finds
        // nothing left.
        let json = |ex: &Exchange| {
            let desc = schema().message("/shop.Orders/Get", Side::Response).unwrap();
            ProtoSchema::to_json(&desc, &ex.response.as_ref().unwrap().body.data[5..]).unwrap()
        };
        let once = json(&ex);
        s.scrub(&mut ex);
        assert_eq!(json(&ex), once);
        assert!(s.audit(&ex).is_empty(), "{:?}", s.audit(&ex));
        // The audit reads fields by name too: an unscrubbed password is found.
        let raw = exchange("/shop.Orders/Get", &frame(&original));
        let found: Vec<_> = s.audit(&raw).into_iter().map(|f| f.category).collect();
        assert!(found.iter().any(|c| c.contains("password")), "{found:?}");
    }

    #[test]
    fn json_paths_name_fields_and_unknown_messages_fall_back_to_the_wire_walk() {
        let s = scrubber(Some("[json-paths]\n'$.status' = \"hash\"\n'$.customer.phone' = \"drop\"\n"));
        let mut ex = exchange("/shop.Orders/Get", &frame(&order(&schema()).encode_to_vec()));
        s.scrub(&mut ex);
        let out = answer(&ex);
        assert!(field(&out, "status").as_str().unwrap().starts_with("tok_"), "{out:?}");
        assert!(!field(&out, "customer").as_message().unwrap().has_field_by_name("phone"));
        assert!(ex.scrub.iter().any(|h| h.rule == "json-path:$.customer.phone"), "{:?}", ex.scrub);

        // A method the schema does not have: the wire walk still finds the e-mail.
        let mut ex = exchange("/other.Svc/Call", &frame(&order(&schema()).encode_to_vec()));
        s.scrub(&mut ex);
        let body = String::from_utf8_lossy(&ex.response.as_ref().unwrap().body.data).into_owned();
        assert!(!body.contains("jane.doe") && body.contains("shipped"), "{body}");
        // Bytes that are not an Order: counted, scrubbed without the schema.
        let mut ex = exchange("/shop.Orders/Get", &frame(&[0x0a, 0x05, b'a', b'@', b'b', b'.', b'c', 0x12, 0xff]));
        s.scrub(&mut ex);
        assert!(ex.scrub.iter().any(|h| h.rule == "grpc:schema-mismatch"), "{:?}", ex.scrub);
    }

    #[test]
    fn fields_a_newer_client_sends_are_walked_without_the_schema() {
        let s = scrubber(None);
        let mut message = order(&schema()).encode_to_vec();
        // Field 99 (unknown to the schema): a string with an e-mail address.
        let extra = b"reach me at jane.doe@example.com";
        message.extend_from_slice(&[0x9a, 0x06, extra.len() as u8]);
        message.extend_from_slice(extra);
        let mut ex = exchange("/shop.Orders/Get", &frame(&message));
        s.scrub(&mut ex);
        let out = answer(&ex);
        let unknown: Vec<_> = out.unknown_fields().collect();
        assert_eq!(unknown.len(), 1);
        let body = String::from_utf8_lossy(&ex.response.as_ref().unwrap().body.data).into_owned();
        assert!(!body.contains("jane.doe") && body.contains("reach me at"), "{body}");
    }
}

/// Hostile and unusual messages (found by attacking the scrubber): nothing personal may
/// pass, nothing may crash.
#[cfg(test)]
mod hostile_tests {
    use prost_reflect::DynamicMessage;

    use super::*;
    use crate::exchange::{Body, Exchange, Headers, Request};
    use crate::proto::tests::compile;
    use crate::proto::{ProtoSchema, Side};
    use crate::scrub::Scrubber;

    const ATK: &str = r#"
        syntax = "proto3";
        package atk;
        import "google/protobuf/any.proto";
        import "google/protobuf/struct.proto";
        import "google/protobuf/wrappers.proto";
        message Msg {
          string id = 1;
          google.protobuf.Any any = 2;
          google.protobuf.Struct meta = 3;
          google.protobuf.StringValue name = 4;
          string email = 5;
          map<string, string> attrs = 6;
          map<int64, string> by_card = 7;
          bytes blob = 10;
          string note = 17;
          double dcard = 19;
        }
        service S { rpc Call(Msg) returns (Msg); }
    "#;

    const EXT: &str = r#"
        syntax = "proto2";
        package ext;
        message Req { optional string id = 1; extensions 100 to 200; }
        extend Req { optional string contact = 100; optional string password = 101; }
        service E { rpc Call(Req) returns (Req); }
    "#;

    fn setup(proto: &str) -> (ProtoSchema, Scrubber) {
        let schema = ProtoSchema::from_bytes(&compile(proto), "atk.pb").unwrap();
        let scrubber =
            Scrubber::with_defaults(Some(b"a key for the hostile protobuf tests 0123")).with_proto(schema.clone());
        (schema, scrubber)
    }

    fn frame(message: &[u8]) -> Vec<u8> {
        [&[0][..], &(message.len() as u32).to_be_bytes(), message].concat()
    }

    /// The request body after scrubbing, and what the audit says of the original.
    fn scrub(scrubber: &Scrubber, target: &str, content_type: &str, message: &[u8]) -> (Vec<u8>, Vec<String>) {
        let mut h = Headers::new();
        h.push("content-type", content_type);
        let mut ex = Exchange {
            request: Request {
                method: "POST".into(),
                target: target.into(),
                headers: h,
                body: Body::full(frame(message)),
                ..Default::default()
            },
            ..Default::default()
        };
        let found: Vec<String> = scrubber.audit(&ex).into_iter().map(|f| f.category).collect();
        scrubber.scrub(&mut ex);
        let after = scrubber.audit(&ex);
        // Clean once scrubbed (a message the schema cannot read is still said to be so).
        let mismatch = found.iter().any(|c| c.contains("not of the descriptor set"));
        assert!(after.is_empty() || mismatch && after.len() == 1, "after scrubbing: {after:?}");
        (ex.request.body.data.to_vec(), found)
    }

    fn msg(schema: &ProtoSchema) -> DynamicMessage {
        DynamicMessage::new(schema.message("/atk.S/Call", Side::Request).unwrap())
    }

    fn text(body: &[u8]) -> String {
        String::from_utf8_lossy(body).into_owned()
    }

    #[test]
    fn an_any_inside_an_any_thousands_deep_is_unparsed_not_a_crash() {
        let (schema, scrubber) = setup(ATK);
        let pool = schema.message("/atk.S/Call", Side::Request).unwrap().parent_pool().clone();
        let any_desc = pool.get_message_by_name("google.protobuf.Any").unwrap();
        let mut inner = msg(&schema);
        inner.set_field_by_name("email", Value::String("deep@example.com".into()));
        let mut value = inner.encode_to_vec();
        let mut type_url = "type.googleapis.com/atk.Msg".to_string();
        for _ in 0..5000 {
            let mut any = DynamicMessage::new(any_desc.clone());
            any.set_field_by_name("type_url", Value::String(type_url));
            any.set_field_by_name("value", Value::Bytes(value.into()));
            value = any.encode_to_vec();
            type_url = "type.googleapis.com/google.protobuf.Any".into();
        }
        let mut outer = msg(&schema);
        outer.set_field_by_name("id", Value::String("x".into()));
        let mut message = outer.encode_to_vec();
        message.extend_from_slice(&[0x12]);
        prost::encoding::encode_varint(value.len() as u64, &mut message);
        message.extend_from_slice(&value);
        // On a small stack, as the proxy's writer thread has.
        let (body, _) = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || scrub(&scrubber, "/atk.S/Call", "application/grpc", &message))
            .unwrap()
            .join()
            .unwrap();
        assert!(!text(&body).contains("deep@example.com"), "unparsed, dropped");
    }

    #[test]
    fn values_hidden_by_decoding_names_beside_emails_and_extensions_are_scrubbed() {
        let (schema, scrubber) = setup(ATK);
        // A field sent twice: decoding keeps the last; the first must not survive.
        let mut twice = msg(&schema);
        twice.set_field_by_name("note", Value::String("mail mary.major@example.com".into()));
        let mut message = twice.encode_to_vec();
        let mut last = msg(&schema);
        last.set_field_by_name("note", Value::String("ok".into()));
        message.extend(last.encode_to_vec());
        let (body, _) = scrub(&scrubber, "/atk.S/Call", "application/grpc", &message);
        assert!(!text(&body).contains("mary.major"), "{:?}", text(&body));

        // A name beside an e-mail in a Struct, a wrapper and a map.
        let meta = serde_json::json!({"name": "Jane Doe", "email": "jane@example.com", "plan": "pro"});
        let mut m = msg(&schema);
        let struct_desc = schema.message("/atk.S/Call", Side::Request).unwrap().get_field_by_name("meta").unwrap();
        let meta = DynamicMessage::deserialize(struct_desc.kind().as_message().unwrap().clone(), meta).unwrap();
        m.set_field_by_name("meta", Value::Message(meta));
        let wrapper = m.descriptor().get_field_by_name("name").unwrap().kind().as_message().unwrap().clone();
        let mut name = DynamicMessage::new(wrapper);
        name.set_field_by_name("value", Value::String("John Roe".into()));
        m.set_field_by_name("name", Value::Message(name));
        m.set_field_by_name("email", Value::String("john@example.com".into()));
        let mut attrs = std::collections::HashMap::new();
        attrs.insert(MapKey::String("name".into()), Value::String("Ann Poe".into()));
        attrs.insert(MapKey::String("email".into()), Value::String("ann@example.com".into()));
        m.set_field_by_name("attrs", Value::Map(attrs));
        let (body, _) = scrub(&scrubber, "/atk.S/Call", "application/grpc", &m.encode_to_vec());
        let t = text(&body);
        for personal in ["Jane Doe", "John Roe", "Ann Poe", "@example.com"] {
            assert!(!t.contains(personal), "{personal} in {t:?}");
        }
        assert!(t.contains("pro"), "the rest kept: {t:?}");

        // proto2 extensions, by their names.
        let (ext_schema, ext_scrubber) = setup(EXT);
        let desc = ext_schema.message("/ext.E/Call", Side::Request).unwrap();
        let mut req = DynamicMessage::new(desc.clone());
        let pool = desc.parent_pool();
        req.set_extension(
            &pool.get_extension_by_name("ext.contact").unwrap(),
            Value::String("reach kim@example.com".into()),
        );
        req.set_extension(&pool.get_extension_by_name("ext.password").unwrap(), Value::String("hunter2hunter2".into()));
        let (body, found) = scrub(&ext_scrubber, "/ext.E/Call", "application/grpc", &req.encode_to_vec());
        let t = text(&body);
        assert!(!t.contains("kim@") && !t.contains("hunter2"), "{t:?}");
        assert!(found.iter().any(|c| c.contains("password")), "the audit reads extensions by name: {found:?}");
    }

    #[test]
    fn cards_as_numbers_binary_bytes_unknown_groups_and_mismatches_do_not_pass() {
        let (schema, scrubber) = setup(ATK);
        let mut m = msg(&schema);
        let mut by_card = std::collections::HashMap::new();
        by_card.insert(MapKey::I64(4111111111111111), Value::String("visa".into()));
        m.set_field_by_name("by_card", Value::Map(by_card));
        m.set_field_by_name("dcard", Value::F64(4111111111111111.0));
        m.set_field_by_name("blob", Value::Bytes([&[0xff][..], b" lee@example.com"].concat().into()));
        let mut message = m.encode_to_vec();
        // An unknown group (field 50) holding an address, and an unknown string.
        message.extend_from_slice(&[0x93, 0x03, 0x0a, 0x10]);
        message.extend_from_slice(b"grp@example.com!");
        message.extend_from_slice(&[0x94, 0x03]);
        let (body, _) = scrub(&scrubber, "/atk.S/Call", "application/grpc", &message);
        let decoded =
            DynamicMessage::decode(schema.message("/atk.S/Call", Side::Request).unwrap(), &body[5..]).unwrap();
        assert!(!decoded.has_field_by_name("dcard"), "{decoded:?}");
        assert!(decoded.get_field_by_name("by_card").unwrap().as_map().unwrap().is_empty());
        let t = text(&body);
        assert!(!t.contains("lee@") && !t.contains("grp@"), "{t:?}");

        // Bytes that are not of the schema's type: scrubbed without it, and the audit says so.
        let stale = [0x0a, 0x05, b'a', b'@', b'b', b'.', b'c', 0x2a, 0x02, 0xff, 0xfe];
        let (_, found) = scrub(&scrubber, "/atk.S/Call", "application/grpc", &stale);
        assert!(found.iter().any(|c| c.contains("not of the descriptor set")), "{found:?}");
        // gRPC-Web bodies are checked by name too.
        let mut m = msg(&schema);
        let wrapper = m.descriptor().get_field_by_name("name").unwrap().kind().as_message().unwrap().clone();
        let mut name = DynamicMessage::new(wrapper);
        name.set_field_by_name("value", Value::String("Zoe Quux".into()));
        m.set_field_by_name("name", Value::Message(name));
        m.set_field_by_name("email", Value::String("zoe@example.com".into()));
        let (body, found) = scrub(&scrubber, "/atk.S/Call", "application/grpc-web+proto", &m.encode_to_vec());
        assert!(!text(&body).contains("Zoe Quux"), "{:?}", text(&body));
        assert!(found.iter().any(|c| c.contains("person")), "{found:?}");
    }
}

#[cfg(test)]
mod method_tests {
    use crate::exchange::{Body, Exchange, Headers, Request};
    use crate::proto::tests::{compile, SHOP};
    use crate::proto::ProtoSchema;
    use crate::scrub::Scrubber;

    #[test]
    fn a_call_the_descriptor_set_does_not_have_fails_the_check() {
        let schema = ProtoSchema::from_bytes(&compile(SHOP), "shop.pb").unwrap();
        let scrubber = Scrubber::with_defaults(None).with_proto(schema);
        let mut h = Headers::new();
        h.push("content-type", "application/grpc");
        let ex = |target: &str| Exchange {
            request: Request {
                method: "POST".into(),
                target: target.into(),
                headers: h.clone(),
                body: Body::full(vec![0u8, 0, 0, 0, 0]),
                ..Default::default()
            },
            ..Default::default()
        };
        let found = scrubber.audit(&ex("/billing.Invoices/Get"));
        assert!(found.iter().any(|f| f.category.contains("not in the descriptor set")), "{found:?}");
        assert!(scrubber.audit(&ex("/shop.Orders/Get")).is_empty());
    }
}
