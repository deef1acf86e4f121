//! Response compression: gzip or deflate, chosen from `Accept-Encoding` with q-values
//! (gzip preferred on a tie), for bodies of at least `COMPRESS_THRESHOLD` bytes. SSE
//! streams are compressed with a sync flush after every write, so a client decodes
//! each event as soon as it is sent. Nothing is compressed that the client did not ask
//! for, and a compressor's memory is bounded by its window.

use std::io::Write;

use bytes::Bytes;
use flate2::write::{GzEncoder, ZlibEncoder};
use flate2::Compression;
use http::HeaderValue;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Gzip,
    Deflate,
}

impl Encoding {
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
        })
    }
}

/// The best encoding `accept` allows, if any.
pub fn negotiate(accept: &[u8]) -> Option<Encoding> {
    let s = std::str::from_utf8(accept).ok()?;
    let mut best: Option<(Encoding, f32)> = None;
    let mut star: Option<f32> = None;
    let (mut gzip_q, mut deflate_q) = (None, None);
    for part in s.split(',') {
        let mut it = part.split(';');
        let name = it.next().unwrap_or("").trim();
        let mut q = 1.0f32;
        for p in it {
            if let Some(v) = p
                .trim()
                .strip_prefix("q=")
                .or_else(|| p.trim().strip_prefix("Q="))
            {
                q = v.trim().parse().unwrap_or(0.0);
            }
        }
        if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            gzip_q = Some(q);
        } else if name.eq_ignore_ascii_case("deflate") {
            deflate_q = Some(q);
        } else if name == "*" {
            star = Some(q);
        }
    }
    for (enc, q) in [
        (Encoding::Gzip, gzip_q.or(star)),
        (Encoding::Deflate, deflate_q.or(star)),
    ] {
        if let Some(q) = q.filter(|q| *q > 0.0) {
            if best.is_none_or(|(_, bq)| q > bq) {
                best = Some((enc, q));
            }
        }
    }
    best.map(|(e, _)| e)
}

/// Compresses a whole body.
pub fn compress_all(enc: Encoding, data: &[u8], level: u32) -> Bytes {
    let mut c = Compressor::new(enc, level);
    let body = c.write(data);
    let tail = c.finish();
    [body.as_ref(), tail.as_ref()].concat().into()
}

/// A streaming compressor that flushes after every write.
pub struct Compressor {
    inner: Inner,
}

enum Inner {
    Gzip(GzEncoder<Vec<u8>>),
    Deflate(ZlibEncoder<Vec<u8>>),
    Done,
}

impl Compressor {
    pub fn new(enc: Encoding, level: u32) -> Compressor {
        let level = Compression::new(level.min(9));
        Compressor {
            inner: match enc {
                Encoding::Gzip => Inner::Gzip(GzEncoder::new(Vec::new(), level)),
                Encoding::Deflate => Inner::Deflate(ZlibEncoder::new(Vec::new(), level)),
            },
        }
    }

    /// Compresses `data` and flushes: the returned bytes decode to all of it.
    pub fn write(&mut self, data: &[u8]) -> Bytes {
        // Writing into a Vec cannot fail.
        let out = match &mut self.inner {
            Inner::Gzip(e) => {
                let _ = e.write_all(data);
                let _ = e.flush();
                std::mem::take(e.get_mut())
            }
            Inner::Deflate(e) => {
                let _ = e.write_all(data);
                let _ = e.flush();
                std::mem::take(e.get_mut())
            }
            Inner::Done => Vec::new(),
        };
        Bytes::from(out)
    }

    /// The stream's trailer.
    pub fn finish(&mut self) -> Bytes {
        let out = match std::mem::replace(&mut self.inner, Inner::Done) {
            Inner::Gzip(e) => e.finish().unwrap_or_default(),
            Inner::Deflate(e) => e.finish().unwrap_or_default(),
            Inner::Done => Vec::new(),
        };
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn negotiation_with_q_values() {
        assert_eq!(negotiate(b"gzip, deflate, br"), Some(Encoding::Gzip));
        assert_eq!(negotiate(b"deflate"), Some(Encoding::Deflate));
        assert_eq!(
            negotiate(b"gzip;q=0.5, deflate;q=0.8"),
            Some(Encoding::Deflate)
        );
        assert_eq!(negotiate(b"gzip;q=0, deflate;q=0"), None);
        assert_eq!(negotiate(b"br, identity"), None);
        assert_eq!(negotiate(b"*"), Some(Encoding::Gzip));
        assert_eq!(negotiate(b"*;q=0.1, gzip;q=0"), Some(Encoding::Deflate));
        assert_eq!(negotiate(b"\xff"), None);
    }

    #[test]
    fn flushed_pieces_decode_as_they_come() {
        let mut c = Compressor::new(Encoding::Gzip, 6);
        let a = c.write(b"event: a\n\n");
        let mut d = flate2::write::GzDecoder::new(Vec::new());
        d.write_all(&a).unwrap();
        d.flush().unwrap();
        assert_eq!(
            d.get_ref(),
            b"event: a\n\n",
            "the first piece decodes alone"
        );
        let b = c.write(b"event: b\n\n");
        let t = c.finish();
        let all = [a.as_ref(), b.as_ref(), t.as_ref()].concat();
        let mut out = String::new();
        flate2::read::GzDecoder::new(&all[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "event: a\n\nevent: b\n\n");
    }
}
