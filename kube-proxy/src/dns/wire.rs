//! Bytes in and out: decoding a query (FORMERR when only the header is readable) and encoding a
//! response within a size limit (UDP payload), truncating with the TC bit.

use hickory_proto::op::{Header, Message, MessageType, ResponseCode};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// The smallest UDP payload every client takes (RFC 1035), used when a query has no EDNS record.
pub const MIN_UDP_PAYLOAD: usize = 512;

/// What a received packet asks for.
#[derive(Debug)]
pub enum Decoded {
    /// A well-formed query.
    Query(Message),
    /// A query whose header parses but whose body does not: answer this FORMERR.
    Malformed(Vec<u8>),
    /// Not a query we answer (unreadable header, or a response): drop it.
    Drop,
}

/// Decode a received packet. Never panics, whatever the bytes.
pub fn decode(packet: &[u8]) -> Decoded {
    let header = match Header::read(&mut BinDecoder::new(packet)) {
        Ok(header) => header,
        Err(_) => return Decoded::Drop,
    };
    if header.metadata.message_type != MessageType::Query {
        return Decoded::Drop;
    }
    match Message::from_vec(packet) {
        Ok(message) => Decoded::Query(message),
        Err(_) => {
            let mut error = Message::error_msg(header.metadata.id, header.metadata.op_code, ResponseCode::FormErr);
            error.metadata.recursion_desired = header.metadata.recursion_desired;
            match error.to_vec() {
                Ok(bytes) => Decoded::Malformed(bytes),
                Err(_) => Decoded::Drop,
            }
        }
    }
}

/// The largest response a UDP client takes for this query: its EDNS payload size, at least 512.
pub fn udp_limit(query: &Message) -> usize {
    query.edns.as_ref().map_or(MIN_UDP_PAYLOAD, |edns| usize::from(edns.max_payload()).max(MIN_UDP_PAYLOAD))
}

/// Encode `message` in at most `limit` bytes. When it is bigger: first the additional section is
/// dropped (no TC, as RFC 2181 section 9 allows); if still too big, the authority section goes and
/// as many whole answers as fit are kept, with the TC bit set. `None` only when not even the
/// header and question can be encoded.
pub fn encode(message: &Message, limit: usize) -> Option<Vec<u8>> {
    let fits = |m: &Message| m.to_vec().ok().filter(|bytes| bytes.len() <= limit);
    if let Some(bytes) = fits(message) {
        return Some(bytes);
    }
    let mut smaller = message.clone();
    smaller.additionals.clear();
    if let Some(bytes) = fits(&smaller) {
        return Some(bytes);
    }
    smaller.authorities.clear();
    smaller.metadata.truncation = true;
    let answers = std::mem::take(&mut smaller.answers);
    // The largest prefix of the answers that fits: fits(0) is assumed, fits(hi) is known false.
    let (mut lo, mut hi) = (0, answers.len());
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        smaller.answers = answers[..mid].to_vec();
        if fits(&smaller).is_some() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    smaller.answers = answers[..lo].to_vec();
    if let Some(bytes) = fits(&smaller) {
        return Some(bytes);
    }
    smaller.edns = None;
    smaller.queries.clear();
    smaller.answers.clear();
    fits(&smaller)
}

/// Replace the message id in an encoded message (a relayed upstream reply keeps its bytes).
pub fn set_id(bytes: &mut [u8], id: u16) {
    if let Some(head) = bytes.get_mut(..2) {
        head.copy_from_slice(&id.to_be_bytes());
    }
}
