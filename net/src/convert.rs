//! `http` heads to the capture model.

use bytes::BytesMut;
use tapedeck_captures::{Blob, Header, Headers, HttpVersion};

/// Converts `http` headers to the capture model (names as the HTTP stack reports them, in
/// order, repeated fields kept). All names and values are copied into one buffer that the
/// fields slice, so a message's headers cost one allocation rather than two per field.
pub fn headers(map: &http::HeaderMap) -> Headers {
    let total: usize = map.iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
    let mut buf = BytesMut::with_capacity(total);
    for (name, value) in map {
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(value.as_bytes());
    }
    let all = buf.freeze();
    let mut at = 0;
    let fields = map
        .iter()
        .map(|(name, value)| {
            let (n, v) = (name.as_str().len(), value.len());
            let header =
                Header { name: Blob::from(all.slice(at..at + n)), value: Blob::from(all.slice(at + n..at + n + v)) };
            at += n + v;
            header
        })
        .collect();
    Headers(fields)
}

/// The capture model's version for an `http` version.
pub fn version(v: http::Version) -> HttpVersion {
    match v {
        http::Version::HTTP_09 => HttpVersion::Http09,
        http::Version::HTTP_10 => HttpVersion::Http10,
        http::Version::HTTP_2 => HttpVersion::H2,
        http::Version::HTTP_3 => HttpVersion::H3,
        _ => HttpVersion::Http11,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_keep_order_repeats_and_bytes() {
        let mut map = http::HeaderMap::new();
        map.append("set-cookie", "a=1".parse().unwrap());
        map.append("content-type", "text/plain".parse().unwrap());
        map.append("set-cookie", "b=2".parse().unwrap());
        map.append("x-raw", http::HeaderValue::from_bytes(b"caf\xc3\xa9 \xff").unwrap());
        let h = headers(&map);
        let got: Vec<(String, Vec<u8>)> =
            h.0.iter().map(|f| (String::from_utf8_lossy(&f.name).into_owned(), f.value.to_vec())).collect();
        let want: Vec<(String, Vec<u8>)> =
            map.iter().map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec())).collect();
        assert_eq!(got, want);
        assert_eq!(got.iter().filter(|(n, _)| n == "set-cookie").count(), 2);
        assert!(headers(&http::HeaderMap::new()).0.is_empty());
    }

    #[test]
    fn every_version_has_its_model() {
        assert_eq!(version(http::Version::HTTP_09), HttpVersion::Http09);
        assert_eq!(version(http::Version::HTTP_10), HttpVersion::Http10);
        assert_eq!(version(http::Version::HTTP_11), HttpVersion::Http11);
        assert_eq!(version(http::Version::HTTP_2), HttpVersion::H2);
        assert_eq!(version(http::Version::HTTP_3), HttpVersion::H3);
    }
}
