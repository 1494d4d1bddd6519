//! A minimal SPDY/3.1 framing codec, enough to serve `kubectl port-forward`: SYN_STREAM,
//! SYN_REPLY, DATA, RST_STREAM, PING, GOAWAY and WINDOW_UPDATE, with header blocks
//! compressed by one zlib stream per direction against the SPDY/3 preset dictionary.
//! No maintained Rust crate implements SPDY (it was superseded by HTTP/2), so it is here.
//!
//! Flow control windows are not enforced: kubectl's SPDY library (spdystream) neither
//! enforces them nor waits for WINDOW_UPDATE, and the WebSocket below already applies
//! TCP's backpressure.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

/// The SPDY/3 header compression dictionary (1423 bytes, from the protocol draft).
const DICTIONARY: &[u8] = include_bytes!("spdy3_dictionary.bin");

const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes used here.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_CANCEL: u32 = 5;

/// Frames bigger than this are refused (SPDY allows 16 MiB; kubectl sends 32 KiB chunks).
pub const MAX_FRAME: usize = 1 << 24;

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("malformed {0} frame")]
    Malformed(&'static str),
    #[error("header block: {0}")]
    Headers(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_stream_id: u32,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    /// A control frame this codec has no use for (SETTINGS, HEADERS, ...).
    Other {
        frame_type: u16,
    },
}

/// One side of a SPDY session: the zlib contexts, which live as long as the connection.
pub struct Codec {
    deflate: Compress,
    inflate: Decompress,
}

impl Default for Codec {
    fn default() -> Self {
        Self::new()
    }
}

impl Codec {
    pub fn new() -> Codec {
        let mut deflate = Compress::new(Compression::default(), true);
        // Setting the dictionary on a fresh deflate stream cannot fail.
        let _ = deflate.set_dictionary(DICTIONARY);
        Codec { deflate, inflate: Decompress::new(true) }
    }

    /// Splits one complete frame off the front of `buf`, if there is one.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let length = (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
        if buf.len() < 8 + length {
            return Ok(None);
        }
        let head = buf.split_to(8);
        let mut body = buf.split_to(length).freeze();
        let flags = head[4];
        let fin = flags & FLAG_FIN != 0;
        if head[0] & 0x80 == 0 {
            let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
            return Ok(Some(Frame::Data { stream_id, fin, data: body }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let frame_type = u16::from_be_bytes([head[2], head[3]]);
        let need = |body: &Bytes, n: usize, name: &'static str| {
            if body.len() < n { Err(SpdyError::Malformed(name)) } else { Ok(()) }
        };
        let frame = match frame_type {
            SYN_STREAM => {
                need(&body, 10, "SYN_STREAM")?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                body.advance(6); // associated stream, priority, slot
                Frame::SynStream { stream_id, fin, headers: self.read_headers(&body)? }
            }
            SYN_REPLY => {
                need(&body, 4, "SYN_REPLY")?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                Frame::SynReply { stream_id, fin, headers: self.read_headers(&body)? }
            }
            RST_STREAM => {
                need(&body, 8, "RST_STREAM")?;
                Frame::RstStream { stream_id: body.get_u32() & 0x7fff_ffff, status: body.get_u32() }
            }
            PING => {
                need(&body, 4, "PING")?;
                Frame::Ping { id: body.get_u32() }
            }
            GOAWAY => {
                need(&body, 4, "GOAWAY")?;
                Frame::GoAway { last_stream_id: body.get_u32() & 0x7fff_ffff }
            }
            WINDOW_UPDATE => {
                need(&body, 8, "WINDOW_UPDATE")?;
                Frame::WindowUpdate { stream_id: body.get_u32() & 0x7fff_ffff, delta: body.get_u32() & 0x7fff_ffff }
            }
            other => Frame::Other { frame_type: other },
        };
        Ok(Some(frame))
    }

    /// Appends the wire form of `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), SpdyError> {
        let mut body = BytesMut::new();
        let (frame_type, flags) = match frame {
            Frame::Data { stream_id, fin, data } => {
                out.put_u32(stream_id & 0x7fff_ffff);
                put_flags_len(out, if *fin { FLAG_FIN } else { 0 }, data.len());
                out.put_slice(data);
                return Ok(());
            }
            Frame::SynStream { stream_id, fin, headers } => {
                body.put_u32(*stream_id);
                body.put_u32(0);
                body.put_u16(0);
                body.put_slice(&self.write_headers(headers)?);
                (SYN_STREAM, u8::from(*fin))
            }
            Frame::SynReply { stream_id, fin, headers } => {
                body.put_u32(*stream_id);
                body.put_slice(&self.write_headers(headers)?);
                (SYN_REPLY, u8::from(*fin))
            }
            Frame::RstStream { stream_id, status } => {
                body.put_u32(*stream_id);
                body.put_u32(*status);
                (RST_STREAM, 0)
            }
            Frame::Ping { id } => {
                body.put_u32(*id);
                (PING, 0)
            }
            Frame::GoAway { last_stream_id } => {
                body.put_u32(*last_stream_id);
                body.put_u32(0);
                (GOAWAY, 0)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                body.put_u32(*stream_id);
                body.put_u32(*delta);
                (WINDOW_UPDATE, 0)
            }
            Frame::Other { .. } => return Err(SpdyError::Malformed("unknown")),
        };
        out.put_u16(0x8000 | VERSION);
        out.put_u16(frame_type);
        put_flags_len(out, flags, body.len());
        out.put_slice(&body);
        Ok(())
    }

    fn read_headers(&mut self, compressed: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let mut plain = Vec::with_capacity(compressed.len() * 4 + 64);
        let mut consumed = 0usize;
        loop {
            if plain.capacity() - plain.len() < 1024 {
                plain.reserve(4096);
            }
            let in_before = self.inflate.total_in();
            let out_before = self.inflate.total_out();
            let result = self.inflate.decompress_vec(&compressed[consumed..], &mut plain, FlushDecompress::Sync);
            consumed += usize::try_from(self.inflate.total_in() - in_before).unwrap_or(usize::MAX);
            match result {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(DICTIONARY).map_err(|e| SpdyError::Headers(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(SpdyError::Headers(e.to_string())),
            }
            let progressed = self.inflate.total_out() != out_before || self.inflate.total_in() != in_before;
            let room_left = plain.capacity() > plain.len();
            if (consumed >= compressed.len() && room_left) || !progressed {
                break;
            }
        }
        parse_header_block(&plain)
    }

    fn write_headers(&mut self, headers: &[(String, String)]) -> Result<Vec<u8>, SpdyError> {
        let mut plain = BytesMut::new();
        plain.put_u32(u32::try_from(headers.len()).map_err(|_| SpdyError::Headers("too many".into()))?);
        for (name, value) in headers {
            for s in [name, value] {
                plain.put_u32(u32::try_from(s.len()).map_err(|_| SpdyError::Headers("too long".into()))?);
                plain.put_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut consumed = 0usize;
        loop {
            out.reserve(1024);
            let in_before = self.deflate.total_in();
            self.deflate
                .compress_vec(&plain[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Headers(e.to_string()))?;
            consumed += usize::try_from(self.deflate.total_in() - in_before).unwrap_or(usize::MAX);
            // A sync flush is complete once it returns with output space to spare.
            if consumed >= plain.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

fn put_flags_len(out: &mut BytesMut, flags: u8, len: usize) {
    out.put_u8(flags);
    let len = u32::try_from(len.min(MAX_FRAME - 1)).unwrap_or(0);
    out.put_slice(&len.to_be_bytes()[1..]);
}

fn parse_header_block(mut block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let bad = || SpdyError::Headers("truncated header block".into());
    let take_u32 = |b: &mut &[u8]| -> Result<usize, SpdyError> {
        if b.len() < 4 {
            return Err(bad());
        }
        let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        *b = &b[4..];
        usize::try_from(n).map_err(|_| bad())
    };
    let count = take_u32(&mut block)?;
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let mut pair = [String::new(), String::new()];
        for s in &mut pair {
            let n = take_u32(&mut block)?;
            if block.len() < n {
                return Err(bad());
            }
            *s = String::from_utf8_lossy(&block[..n]).into_owned();
            block = &block[n..];
        }
        let [name, value] = pair;
        headers.push((name, value));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_a_round_trip_across_two_sessions() {
        let (mut client, mut server) = (Codec::new(), Codec::new());
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                fin: false,
                headers: vec![("streamtype".into(), "error".into()), ("port".into(), "80".into())],
            },
            Frame::SynStream {
                stream_id: 3,
                fin: false,
                headers: vec![("streamtype".into(), "data".into()), ("requestid".into(), "0".into())],
            },
            Frame::Data { stream_id: 3, fin: true, data: Bytes::from_static(b"GET / HTTP/1.0\r\n\r\n") },
            Frame::Ping { id: 7 },
            Frame::RstStream { stream_id: 3, status: RST_CANCEL },
            Frame::WindowUpdate { stream_id: 1, delta: 1000 },
            Frame::GoAway { last_stream_id: 3 },
        ];
        let mut wire = BytesMut::new();
        for f in &frames {
            client.encode(f, &mut wire).expect("encode");
        }
        // Decoding byte by byte checks that partial frames wait for the rest.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire {
            buf.put_u8(b);
            while let Some(f) = server.decode(&mut buf).expect("decode") {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn the_dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\x00\x00\x00\x07options"));
        assert!(DICTIONARY.ends_with(b"enq=0."));
    }
}
