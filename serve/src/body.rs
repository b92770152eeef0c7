//! Request bodies: read up to the size limit and, when the sender compressed them
//! (`Content-Encoding: gzip` or `deflate`, as Prebid Server and some exchanges send bid requests),
//! decompressed up to the same limit.
//!
//! The limit holds twice: for the bytes on the wire, and for what they decompress to, so a small
//! body that inflates to gigabytes is refused after `limit + 1` bytes of output. Decompressing a
//! body of at most 64 KiB (the default limit) takes well under a millisecond; it runs on the
//! request's own task.

use std::io::Read;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Body;
use hyper::header::CONTENT_ENCODING;
use hyper::{HeaderMap, Request};

use crate::error::RequestError;

/// The codings a request body may come in, for a 415's `Accept-Encoding`.
pub const ACCEPTED_CODINGS: &str = "gzip, deflate";

/// How a request body is compressed, by its `Content-Encoding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    /// As it is: no `Content-Encoding`, or `identity`.
    Identity,
    /// `gzip` (or its old name `x-gzip`): RFC 1952, one member or several in a row.
    Gzip,
    /// `deflate`: a zlib stream (RFC 1950), as RFC 9110 defines it; a raw deflate stream, which
    /// some clients send under that name, is taken too.
    Deflate,
}

impl Coding {
    /// The coding the request's `Content-Encoding` headers name. More than one coding applied in
    /// turn, or one this server does not decode, is refused (415).
    #[inline]
    pub fn of(headers: &HeaderMap) -> Result<Coding, RequestError> {
        // Nearly every request has no such header: one look-up, nothing else.
        match headers.get(CONTENT_ENCODING) {
            None => Ok(Coding::Identity),
            Some(_) => Coding::named(headers),
        }
    }

    #[cold]
    fn named(headers: &HeaderMap) -> Result<Coding, RequestError> {
        let mut coding = Coding::Identity;
        for value in headers.get_all(CONTENT_ENCODING) {
            let text = value
                .to_str()
                .map_err(|_| RequestError::UnsupportedEncoding("a value that is not visible ASCII".into()))?;
            for name in text.split(',').map(str::trim).filter(|name| !name.is_empty()) {
                let named = if name.eq_ignore_ascii_case("identity") {
                    continue;
                } else if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
                    Coding::Gzip
                } else if name.eq_ignore_ascii_case("deflate") {
                    Coding::Deflate
                } else {
                    return Err(RequestError::UnsupportedEncoding(format!("{name:?}")));
                };
                if coding != Coding::Identity {
                    return Err(RequestError::UnsupportedEncoding(format!(
                        "{text:?} (more than one coding in turn)"
                    )));
                }
                coding = named;
            }
        }
        Ok(coding)
    }

    pub fn name(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
        }
    }

    /// The body `raw` decompressed, refused once it passes `max` bytes.
    #[inline]
    pub fn decode(self, raw: Bytes, max: usize) -> Result<Bytes, RequestError> {
        match self {
            Coding::Identity => Ok(raw),
            _ => self.inflate(&raw, max),
        }
    }

    #[cold]
    fn inflate(self, raw: &[u8], max: usize) -> Result<Bytes, RequestError> {
        let reader: Box<dyn Read + '_> = match self {
            Coding::Identity => return Ok(Bytes::copy_from_slice(raw)),
            Coding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
            Coding::Deflate if is_zlib_header(raw) => Box::new(flate2::read::ZlibDecoder::new(raw)),
            Coding::Deflate => Box::new(flate2::read::DeflateDecoder::new(raw)),
        };
        let mut decoded = Vec::with_capacity(raw.len().saturating_mul(4).min(max));
        let read = reader.take(max as u64 + 1).read_to_end(&mut decoded);
        read.map_err(|err| RequestError::Undecodable { coding: self.name(), reason: err.to_string() })?;
        if decoded.len() > max {
            return Err(RequestError::TooLargeDecoded { coding: self.name(), max });
        }
        Ok(Bytes::from(decoded))
    }
}

/// Whether `raw` opens with a zlib header (RFC 1950 §2.2): deflate, a window of at most 32 KiB,
/// and a check value that makes the first two bytes a multiple of 31.
fn is_zlib_header(raw: &[u8]) -> bool {
    match raw {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// Reads a request's body of at most `max` bytes and decompresses it as its `Content-Encoding`
/// says, to at most `max` bytes again. The coding is checked before anything is read.
pub async fn read_body(request: Request<hyper::body::Incoming>, max: usize) -> Result<Bytes, RequestError> {
    let coding = Coding::of(request.headers())?;
    let raw = read_raw(request.into_body(), max).await?;
    coding.decode(raw, max)
}

/// Reads a body of at most `max` bytes. A body that comes in one piece, as a small one does, is
/// kept as hyper handed it over: no buffer list, no copy.
async fn read_raw<B>(mut body: B, max: usize) -> Result<Bytes, RequestError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    // A declared length over the limit is refused before anything is read.
    if body.size_hint().lower() > max as u64 {
        return Err(RequestError::TooLarge(max));
    }
    let mut whole = Bytes::new();
    let mut joined: Option<Vec<u8>> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| RequestError::Json(format!("the body could not be read: {e}")))?;
        // Trailers are not part of the body.
        let Ok(chunk) = frame.into_data() else { continue };
        let len = joined.as_ref().map_or(whole.len(), Vec::len) + chunk.len();
        if len > max {
            return Err(RequestError::TooLarge(max));
        }
        match &mut joined {
            Some(joined) => joined.extend_from_slice(&chunk),
            None if whole.is_empty() => whole = chunk,
            None => {
                let mut both = Vec::with_capacity(len);
                both.extend_from_slice(&whole);
                both.extend_from_slice(&chunk);
                joined = Some(both);
            }
        }
    }
    Ok(joined.map_or(whole, Bytes::from))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use hyper::header::HeaderValue;

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(CONTENT_ENCODING, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn gzip(data: &[u8]) -> Bytes {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(data).unwrap();
        Bytes::from(encoder.finish().unwrap())
    }

    #[test]
    fn content_encoding_names_one_coding_at_most() {
        assert_eq!(Coding::of(&headers(&[])).unwrap(), Coding::Identity);
        assert_eq!(Coding::of(&headers(&["identity"])).unwrap(), Coding::Identity);
        assert_eq!(Coding::of(&headers(&["GZip"])).unwrap(), Coding::Gzip);
        assert_eq!(Coding::of(&headers(&["x-gzip"])).unwrap(), Coding::Gzip);
        assert_eq!(Coding::of(&headers(&["identity, deflate"])).unwrap(), Coding::Deflate);
        for refused in [&["br"][..], &["gzip, gzip"], &["gzip", "deflate"], &["zstd"]] {
            let err = Coding::of(&headers(refused)).unwrap_err();
            assert_eq!(err.status(), 415, "{refused:?}: {err}");
        }
        let err = Coding::of(&headers(&["br"])).unwrap_err().to_string();
        assert!(err.contains("\"br\"") && err.contains("gzip or deflate"), "{err}");
    }

    #[test]
    fn every_coding_decodes_to_the_same_body() {
        let body = br#"{"request_id":"r-1","ad_unit_id":"u"}"#.repeat(20);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(&body).unwrap();
        let zlib = zlib.finish().unwrap();
        let mut raw_deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw_deflate.write_all(&body).unwrap();
        let raw_deflate = raw_deflate.finish().unwrap();
        assert!(is_zlib_header(&zlib) && !is_zlib_header(&raw_deflate));
        let (a, b) = body.split_at(100);
        let two_members = [gzip(a), gzip(b)].concat();
        for (coding, sent) in [
            (Coding::Identity, Bytes::from(body.clone())),
            (Coding::Gzip, gzip(&body)),
            (Coding::Gzip, Bytes::from(two_members)),
            (Coding::Deflate, Bytes::from(zlib)),
            (Coding::Deflate, Bytes::from(raw_deflate)),
        ] {
            assert_eq!(coding.decode(sent, 4096).unwrap()[..], body[..], "{coding:?}");
        }
    }

    #[test]
    fn a_body_that_inflates_past_the_limit_or_is_not_its_coding_is_refused() {
        let bomb = gzip(&vec![b' '; 1 << 20]);
        assert!(bomb.len() < 4096, "{} bytes", bomb.len());
        let err = Coding::Gzip.decode(bomb, 4096).unwrap_err();
        assert_eq!(
            (err.status(), err.to_string()),
            (413, "the body, decompressed (gzip), is larger than 4096 bytes".into())
        );
        // Exactly at the limit is accepted.
        assert_eq!(Coding::Gzip.decode(gzip(&[b'x'; 4096]), 4096).unwrap().len(), 4096);
        for broken in [&b"{\"not\":\"compressed\"}"[..], &gzip(b"{}")[..10], b""] {
            for coding in [Coding::Gzip, Coding::Deflate] {
                match coding.decode(Bytes::copy_from_slice(broken), 4096) {
                    Err(err) => {
                        assert_eq!(err.status(), 400, "{coding:?} {broken:?}: {err}");
                        assert!(err.to_string().starts_with("the body is not valid "), "{err}");
                    }
                    // An empty stream inflates to nothing, which the JSON reader then refuses.
                    Ok(decoded) => assert!(broken.is_empty() && decoded.is_empty(), "{coding:?} {broken:?}"),
                }
            }
        }
    }
}
