//! Responses as bytes. Each resource is encoded once, in the exact form it
//! takes inside a response; a response to one proxy is then a list of shared
//! chunks plus a few bytes of its own (version, nonce). Protobuf lets a
//! message be written field by field in any order and concatenated, so
//! nothing is decoded or re-encoded per proxy, and a push to a thousand
//! proxies of one view holds the view's bytes once.

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

/// Pieces shorter than this are copied into the response's own buffer rather
/// than shared: each separate chunk costs an HTTP/2 frame header, and small
/// copies are cheaper than that.
const SHARE_FROM: usize = 512;

/// Length of a gRPC message frame's header (compressed flag, u32 length).
const GRPC_HEADER_LEN: usize = 5;

/// One gRPC message assembled from shared and own bytes.
#[derive(Debug, Default)]
pub struct WireMessage {
    chunks: Vec<Bytes>,
    own: BytesMut,
    /// Bytes in `chunks`; `own` counts for itself.
    shared_len: usize,
}

impl WireMessage {
    pub fn new() -> WireMessage {
        WireMessage::default()
    }

    /// Appends pre-encoded bytes, shared when they are large.
    pub fn push_encoded(&mut self, bytes: &Bytes) {
        if bytes.len() < SHARE_FROM {
            self.own.extend_from_slice(bytes);
            return;
        }
        self.flush_own();
        self.shared_len += bytes.len();
        self.chunks.push(bytes.clone());
    }

    /// Appends a string field (skipped when empty, as protobuf does).
    pub fn push_string(&mut self, tag: u32, value: &str) {
        if value.is_empty() {
            return;
        }
        self.push_len_prefix(tag, value.len());
        self.own.extend_from_slice(value.as_bytes());
    }

    /// Appends the key and length of a length-delimited field whose `len`
    /// bytes of content follow.
    pub fn push_len_prefix(&mut self, tag: u32, len: usize) {
        encode_key(tag, WireType::LengthDelimited, &mut self.own);
        encode_varint(len as u64, &mut self.own);
    }

    /// The encoded message's length so far.
    pub fn len(&self) -> usize {
        self.shared_len + self.own.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message as one uncompressed gRPC frame, in chunks for HTTP/2
    /// DATA frames.
    pub fn into_grpc_frame(mut self) -> Vec<Bytes> {
        let len = u32::try_from(self.len()).expect("an xDS response over 4 GiB");
        self.flush_own();
        let mut header = BytesMut::with_capacity(GRPC_HEADER_LEN);
        header.put_u8(0);
        header.put_u32(len);
        let mut frame = Vec::with_capacity(self.chunks.len() + 1);
        frame.push(header.freeze());
        frame.append(&mut self.chunks);
        frame
    }

    fn flush_own(&mut self) {
        if !self.own.is_empty() {
            let own = self.own.split().freeze();
            self.shared_len += own.len();
            self.chunks.push(own);
        }
    }
}

/// Bytes of a length-delimited field `tag` holding `content`: how a message
/// appears as a field of another.
pub fn length_delimited_field(
    tag: u32,
    content_len: usize,
    content: impl FnOnce(&mut BytesMut),
) -> Bytes {
    let mut buf = BytesMut::with_capacity(
        prost::encoding::key_len(tag) + encoded_len_varint(content_len as u64) + content_len,
    );
    encode_key(tag, WireType::LengthDelimited, &mut buf);
    encode_varint(content_len as u64, &mut buf);
    let start = buf.len();
    content(&mut buf);
    debug_assert_eq!(buf.len() - start, content_len, "declared length matches");
    buf.freeze()
}

/// Length of a string field as encoded (0 when empty).
pub fn string_field_len(tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        prost::encoding::key_len(tag) + encoded_len_varint(value.len() as u64) + value.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use trireme_proto::envoy::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use trireme_proto::envoy::pb::google::protobuf::Any;

    fn joined(frame: Vec<Bytes>) -> Vec<u8> {
        frame.concat()
    }

    #[test]
    fn a_message_built_from_pieces_decodes_as_written() {
        let big = Any {
            type_url: "type.googleapis.com/x".into(),
            value: vec![7; 2000],
        };
        let small = Any {
            type_url: "type.googleapis.com/y".into(),
            value: vec![1, 2, 3],
        };
        let entry = |any: &Any| {
            length_delimited_field(2, any.encoded_len(), |buf| any.encode(buf).unwrap())
        };
        let (big_entry, small_entry) = (entry(&big), entry(&small));
        let mut message = WireMessage::new();
        message.push_encoded(&small_entry);
        message.push_encoded(&big_entry);
        message.push_string(1, "v1");
        message.push_string(5, "");
        message.push_string(4, "type.googleapis.com/x");
        let frame = message.into_grpc_frame();
        assert!(
            frame
                .iter()
                .any(|chunk| chunk.as_ptr() == big_entry.as_ptr()),
            "the large entry is shared, not copied"
        );
        let bytes = joined(frame);
        assert_eq!(bytes[0], 0, "not compressed");
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 5);
        let decoded = DiscoveryResponse::decode(&bytes[5..]).unwrap();
        assert_eq!(
            decoded,
            DiscoveryResponse {
                version_info: "v1".into(),
                resources: vec![small, big],
                type_url: "type.googleapis.com/x".into(),
                ..Default::default()
            }
        );
    }

    #[test]
    fn string_field_lengths_match_their_encoding() {
        let mut message = WireMessage::new();
        message.push_string(3, &"n".repeat(300));
        assert_eq!(message.len(), string_field_len(3, &"n".repeat(300)));
        assert_eq!(string_field_len(3, ""), 0);
    }
}
