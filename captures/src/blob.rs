//! `Blob`: captured bytes (header names and values, bodies) that stay exact on disk and
//! read well as JSON.
//!
//! HTTP carries bytes, not text: header values may hold obs-text and bodies may be binary.
//! In `.tape` files a blob is raw length-prefixed bytes. In JSON it is a plain string when
//! the bytes are valid UTF-8 (the common case, so `tapedeck cat --format json` is readable)
//! and `{"base64": "..."}` otherwise, so every JSON round-trip is lossless.

use std::fmt;
use std::ops::Deref;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Immutable, cheaply cloneable bytes captured from the wire.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Blob(Bytes);

impl Blob {
    /// An empty blob.
    pub const fn new() -> Self {
        Blob(Bytes::new())
    }

    /// A blob of a static string, without copying.
    pub const fn from_static(s: &'static str) -> Self {
        Blob(Bytes::from_static(s.as_bytes()))
    }

    /// The bytes as `&str` when they are valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The bytes as text, replacing invalid UTF-8 sequences with U+FFFD.
    pub fn to_str_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    /// The underlying `Bytes` (a cheap reference-counted clone).
    pub fn bytes(&self) -> Bytes {
        self.0.clone()
    }

    /// Compares with `other` ignoring ASCII case (header names).
    pub fn eq_ignore_ascii_case(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other.as_bytes())
    }
}

impl Deref for Blob {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Blob {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Bytes> for Blob {
    fn from(b: Bytes) -> Self {
        Blob(b)
    }
}

impl From<Vec<u8>> for Blob {
    fn from(v: Vec<u8>) -> Self {
        Blob(Bytes::from(v))
    }
}

impl From<&[u8]> for Blob {
    fn from(v: &[u8]) -> Self {
        Blob(Bytes::copy_from_slice(v))
    }
}

impl From<String> for Blob {
    fn from(s: String) -> Self {
        Blob(Bytes::from(s))
    }
}

impl From<&str> for Blob {
    fn from(s: &str) -> Self {
        Blob(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<Blob> for Bytes {
    fn from(b: Blob) -> Bytes {
        b.0
    }
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            Some(s) => fmt::Debug::fmt(s, f),
            None => write!(f, "b{:?}", self.to_str_lossy()),
        }
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            return serializer.serialize_bytes(&self.0);
        }
        match self.as_str() {
            Some(s) => serializer.serialize_str(s),
            None => {
                use serde::ser::SerializeMap;
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("base64", &BASE64.encode(&self.0))?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BlobVisitor;

        impl<'de> Visitor<'de> for BlobVisitor {
            type Value = Blob;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a string, {"base64": "..."} or bytes"#)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Blob, E> {
                Ok(Blob::from(v))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Blob, E> {
                Ok(Blob::from(v))
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob::from(v))
            }

            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob::from(v))
            }

            fn visit_unit<E: de::Error>(self) -> Result<Blob, E> {
                Ok(Blob::new())
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Blob, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Blob::from(out))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Blob, A::Error> {
                let mut out = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "base64" {
                        let text: String = map.next_value()?;
                        let bytes = BASE64
                            .decode(text.as_bytes())
                            .map_err(|e| de::Error::custom(format!("invalid base64: {e}")))?;
                        out = Some(Blob::from(bytes));
                    } else {
                        return Err(de::Error::unknown_field(&key, &["base64"]));
                    }
                }
                out.ok_or_else(|| de::Error::missing_field("base64"))
            }
        }

        deserializer.deserialize_any(BlobVisitor)
    }
}

// The `.tape` encoding. Decoding checks the declared length against the bytes actually
// left in the record before allocating, so a corrupt length can never ask for gigabytes.
impl bincode::Encode for Blob {
    fn encode<E: bincode::enc::Encoder>(&self, encoder: &mut E) -> Result<(), bincode::error::EncodeError> {
        self.0.as_ref().encode(encoder)
    }
}

impl<Context> bincode::Decode<Context> for Blob {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        use bincode::de::read::Reader;
        let len = u64::decode(decoder)?;
        let len = usize::try_from(len).map_err(|_| bincode::error::DecodeError::OutsideUsizeRange(len))?;
        decoder.claim_bytes_read(len)?;
        let reader = decoder.reader();
        match reader.peek_read(len) {
            Some(slice) => {
                let blob = Blob::from(slice);
                reader.consume(len);
                Ok(blob)
            }
            None => Err(bincode::error::DecodeError::UnexpectedEnd { additional: len }),
        }
    }
}

bincode::impl_borrow_decode!(Blob);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_text_for_utf8_and_base64_otherwise() {
        let text = Blob::from("héllo");
        assert_eq!(serde_json::to_string(&text).unwrap(), r#""héllo""#);
        let binary = Blob::from(&[0xff, 0x00, 0x80][..]);
        let json = serde_json::to_string(&binary).unwrap();
        assert_eq!(json, r#"{"base64":"/wCA"}"#);
        assert_eq!(serde_json::from_str::<Blob>(&json).unwrap(), binary);
        assert_eq!(serde_json::from_str::<Blob>(r#""héllo""#).unwrap(), text);
    }

    #[test]
    fn bad_base64_is_an_error_not_a_panic() {
        assert!(serde_json::from_str::<Blob>(r#"{"base64":"!!"}"#).is_err());
        assert!(serde_json::from_str::<Blob>(r#"{"hex":"00"}"#).is_err());
    }
}
