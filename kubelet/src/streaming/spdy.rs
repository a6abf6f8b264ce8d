//! SPDY/3.1, the server side, as much as kubectl's exec, attach, cp and port-forward use: streams
//! opened by the client (SYN_STREAM, answered with SYN_REPLY), data frames with FIN, RST_STREAM,
//! PING, GOAWAY and WINDOW_UPDATE. Header blocks are zlib-compressed with the SPDY/3 dictionary,
//! one compression context per direction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00, section 2.6.10.1).
pub const DICTIONARY: &[u8] = b"\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\x00\x00\x06delete\x00\x00\x00\x05trace\
\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-charset\x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-ranges\
\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\x0dcache-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\
\x00\x00\x00\x10content-encoding\x00\x00\x00\x10content-language\x00\x00\x00\x0econtent-length\x00\x00\x00\x10content-location\x00\x00\x00\x0bcontent-md5\
\x00\x00\x00\x0dcontent-range\x00\x00\x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00\x00\x00\x07expires\
\x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\x00\x00\x11if-modified-since\x00\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\
\x00\x00\x00\x13if-unmodified-since\x00\x00\x00\x0dlast-modified\x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00\x00\x00\x06pragma\
\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authorization\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-after\
\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\x00\x00\x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser-agent\
\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10www-authenticate\x00\x00\x00\x06method\x00\x00\x00\x03get\
\x00\x00\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00\x07version\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\
\x00\x00\x00\x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505\
203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error\
501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,\
text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch\
charset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const WINDOW_UPDATE: u16 = 9;
const FLAG_FIN: u8 = 1;

/// What the session reports to the protocol on top.
#[derive(Debug)]
pub enum Event {
    /// A new stream with its headers.
    Open {
        id: u32,
        headers: HashMap<String, String>,
        fin: bool,
    },
    Data {
        id: u32,
        data: Vec<u8>,
        fin: bool,
    },
    Reset {
        id: u32,
    },
    /// The client went away.
    Closed,
}

fn encode_headers(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut b = (headers.len() as u32).to_be_bytes().to_vec();
    for (k, v) in headers {
        b.extend_from_slice(&(k.len() as u32).to_be_bytes());
        b.extend_from_slice(k.as_bytes());
        b.extend_from_slice(&(v.len() as u32).to_be_bytes());
        b.extend_from_slice(v.as_bytes());
    }
    b
}

fn decode_headers(raw: &[u8]) -> Option<HashMap<String, String>> {
    let u32_at = |o: usize| raw.get(o..o + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let n = u32_at(0)?;
    let mut off = 4;
    let mut out = HashMap::new();
    for _ in 0..n.min(1024) {
        let kl = u32_at(off)?;
        let k = raw.get(off + 4..off + 4 + kl)?;
        off += 4 + kl;
        let vl = u32_at(off)?;
        let v = raw.get(off + 4..off + 4 + vl)?;
        off += 4 + vl;
        out.insert(String::from_utf8_lossy(k).to_lowercase(), String::from_utf8_lossy(v).into_owned());
    }
    Some(out)
}

/// Inflates one header block, supplying the dictionary when zlib asks for it.
fn inflate(d: &mut Decompress, input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() * 4 + 64);
    let mut consumed = 0usize;
    loop {
        let before_in = d.total_in();
        if out.capacity() - out.len() < 256 {
            out.reserve(4096);
        }
        match d.decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync) {
            Ok(Status::Ok | Status::BufError | Status::StreamEnd) => {}
            Err(e) if e.needs_dictionary().is_some() => {
                consumed += (d.total_in() - before_in) as usize;
                d.set_dictionary(DICTIONARY).ok()?;
                continue;
            }
            Err(_) => return None,
        }
        consumed += (d.total_in() - before_in) as usize;
        if consumed >= input.len() && out.capacity() > out.len() {
            return Some(out);
        }
    }
}

/// The sending half: frames go out in the order they are made (header compression depends on it).
#[derive(Clone)]
pub struct Writer {
    inner: Arc<Mutex<WriterInner>>,
}

struct WriterInner {
    deflate: Compress,
    tx: mpsc::UnboundedSender<Vec<u8>>,
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&0x8003u16.to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

impl Writer {
    fn send(&self, frame: Vec<u8>) -> bool {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).tx.send(frame).is_ok()
    }

    pub fn reply(&self, id: u32) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let raw = encode_headers(&[]);
        let mut block = Vec::with_capacity(raw.len() + 64);
        if inner.deflate.compress_vec(&raw, &mut block, FlushCompress::Sync).is_err() {
            return false;
        }
        let mut payload = id.to_be_bytes().to_vec();
        payload.extend_from_slice(&block);
        inner.tx.send(control(SYN_REPLY, 0, &payload)).is_ok()
    }

    /// Data on stream `id`, in frames of at most 32 KiB; `fin` closes our side after it.
    pub fn data(&self, id: u32, data: &[u8], fin: bool) -> bool {
        let mut chunks: Vec<&[u8]> = data.chunks(32 * 1024).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let last = chunks.len() - 1;
        for (i, c) in chunks.into_iter().enumerate() {
            let mut f = Vec::with_capacity(8 + c.len());
            f.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
            f.push(if fin && i == last { FLAG_FIN } else { 0 });
            f.extend_from_slice(&(c.len() as u32).to_be_bytes()[1..]);
            f.extend_from_slice(c);
            if !self.send(f) {
                return false;
            }
        }
        true
    }

    pub fn reset(&self, id: u32) -> bool {
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&5u32.to_be_bytes()); // CANCEL
        self.send(control(RST_STREAM, 0, &p))
    }

    pub fn window_update(&self, id: u32, delta: u32) -> bool {
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&delta.to_be_bytes());
        self.send(control(WINDOW_UPDATE, 0, &p))
    }

    pub fn goaway(&self) -> bool {
        self.send(control(GOAWAY, 0, &[0, 0, 0, 0, 0, 0, 0, 0]))
    }
}

/// Runs a session on `io`: frames from the client become [`Event`]s; the [`Writer`] sends.
/// The returned task ends when the connection does.
pub fn session<S>(io: S) -> (Writer, mpsc::UnboundedReceiver<Event>, tokio::task::JoinHandle<()>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (frame_tx, mut frame_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let mut deflate = Compress::new(Compression::default(), true);
    let _ = deflate.set_dictionary(DICTIONARY);
    let writer = Writer { inner: Arc::new(Mutex::new(WriterInner { deflate, tx: frame_tx })) };
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let w = writer.clone();
    let task = tokio::spawn(async move {
        let write_loop = async {
            while let Some(f) = frame_rx.recv().await {
                if wr.write_all(&f).await.is_err() {
                    break;
                }
                let _ = wr.flush().await;
            }
            let _ = wr.shutdown().await;
        };
        let read_loop = async {
            let mut inflater = Decompress::new(true);
            let mut head = [0u8; 8];
            loop {
                if rd.read_exact(&mut head).await.is_err() {
                    break;
                }
                let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
                let flags = head[4];
                if len > 16 << 20 {
                    break;
                }
                let mut payload = vec![0u8; len];
                if rd.read_exact(&mut payload).await.is_err() {
                    break;
                }
                if head[0] & 0x80 == 0 {
                    let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
                    if !payload.is_empty() {
                        w.window_update(id, payload.len() as u32);
                        w.window_update(0, payload.len() as u32);
                    }
                    let _ = ev_tx.send(Event::Data { id, data: payload, fin: flags & FLAG_FIN != 0 });
                    continue;
                }
                let kind = u16::from_be_bytes([head[2], head[3]]);
                match kind {
                    SYN_STREAM if payload.len() >= 10 => {
                        let id = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff;
                        let Some(raw) = inflate(&mut inflater, &payload[10..]) else { break };
                        let headers = decode_headers(&raw).unwrap_or_default();
                        let _ = ev_tx.send(Event::Open { id, headers, fin: flags & FLAG_FIN != 0 });
                    }
                    RST_STREAM if payload.len() >= 4 => {
                        let id = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff;
                        let _ = ev_tx.send(Event::Reset { id });
                    }
                    PING => {
                        w.send(control(PING, 0, &payload));
                    }
                    GOAWAY => break,
                    _ => {}
                }
            }
            let _ = ev_tx.send(Event::Closed);
        };
        tokio::select! {
            _ = write_loop => {}
            _ = read_loop => {}
        }
    });
    (writer, ev_rx, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_spdy3s() {
        // Length and Adler-32 of the dictionary in the SPDY/3 draft.
        assert_eq!(DICTIONARY.len(), 1423);
        let (mut a, mut b) = (1u32, 0u32);
        for &x in DICTIONARY {
            a = (a + x as u32) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 3821447106);
    }

    #[test]
    fn header_blocks_round_trip_through_the_dictionary() {
        let mut c = Compress::new(Compression::default(), true);
        c.set_dictionary(DICTIONARY).expect("dictionary");
        let mut d = Decompress::new(true);
        for round in 0..3 {
            let raw = encode_headers(&[("streamtype", "data"), ("port", "8080"), ("requestid", &round.to_string())]);
            let mut block = Vec::with_capacity(raw.len() + 64);
            c.compress_vec(&raw, &mut block, FlushCompress::Sync).expect("compress");
            let back = inflate(&mut d, &block).expect("inflate");
            let h = decode_headers(&back).expect("headers");
            assert_eq!(h["streamtype"], "data");
            assert_eq!(h["requestid"], round.to_string());
        }
    }
}
