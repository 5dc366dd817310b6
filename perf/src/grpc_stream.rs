//! A bidirectional gRPC stream over a tonic `Channel`, reading the response
//! body's frames directly. tonic's own `Streaming` keeps a receive buffer as
//! large as the largest message it has seen, for the life of the stream: a
//! few MB of CDS times tens of thousands of simulated proxies. Here a message
//! that arrives in one HTTP/2 frame is a slice of that frame, a larger one is
//! copied once into an exact-size buffer, and nothing outlives the message.

use std::collections::VecDeque;
use std::convert::Infallible;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use prost::Message;
use tonic::Status;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::ServiceExt;

/// gRPC's message prefix: a compression flag and a big-endian length.
const PREFIX_LEN: usize = 5;

/// Encodes one request as a gRPC length-prefixed message.
pub fn frame_message<M: Message>(message: &M) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(PREFIX_LEN + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    message
        .encode(&mut buf)
        .expect("the buffer was sized for the message");
    buf.freeze()
}

/// Opens `path` (e.g. `/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources`)
/// with requests from `requests` (each already framed by [`frame_message`]),
/// and returns the response messages once the server sent its headers.
pub async fn open(
    channel: Channel,
    path: &'static str,
    requests: impl Stream<Item = Bytes> + Send + 'static,
) -> Result<ResponseMessages, Status> {
    let body = StreamBody::new(requests.map(|bytes| Ok::<_, Infallible>(Frame::data(bytes))));
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(Body::new(body))
        .map_err(|e| Status::internal(format!("building the request: {e}")))?;
    let response = channel
        .oneshot(request)
        .await
        .map_err(|e| Status::unavailable(format!("stream did not open: {}", error_chain(&e))))?;
    // A server that fails at once answers with the status in its headers.
    if let Some(status) = Status::from_header_map(response.headers())
        && status.code() != tonic::Code::Ok
    {
        return Err(status);
    }
    if !response.status().is_success() {
        return Err(Status::unknown(format!(
            "HTTP status {}",
            response.status()
        )));
    }
    Ok(ResponseMessages {
        body: response.into_body(),
        chunks: MessageAssembler::default(),
    })
}

/// An error with its causes (tonic's transport errors say little on their own).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The messages of a response body.
pub struct ResponseMessages {
    body: Body,
    chunks: MessageAssembler,
}

impl ResponseMessages {
    /// The next message's encoding, `Ok(None)` when the server ended the
    /// stream cleanly, or the stream's error status.
    pub async fn next(&mut self) -> Result<Option<Bytes>, Status> {
        loop {
            if let Some(message) = self.chunks.take_message()? {
                return Ok(Some(message));
            }
            let Some(frame) = self.body.frame().await else {
                return Ok(None);
            };
            let frame = frame?;
            match frame.into_data() {
                Ok(data) => self.chunks.push(data),
                Err(frame) => {
                    if let Some(status) = frame
                        .trailers_ref()
                        .and_then(Status::from_header_map)
                        .filter(|status| status.code() != tonic::Code::Ok)
                    {
                        return Err(status);
                    }
                }
            }
        }
    }
}

/// Cuts length-prefixed messages out of a sequence of data chunks.
#[derive(Default)]
struct MessageAssembler {
    chunks: VecDeque<Bytes>,
    buffered: usize,
}

impl MessageAssembler {
    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.buffered += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    fn take_message(&mut self) -> Result<Option<Bytes>, Status> {
        if self.buffered < PREFIX_LEN {
            return Ok(None);
        }
        let mut prefix = [0u8; PREFIX_LEN];
        self.peek(&mut prefix);
        if prefix[0] != 0 {
            return Err(Status::internal("compressed message; none was asked for"));
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if self.buffered < PREFIX_LEN + len {
            return Ok(None);
        }
        self.skip(PREFIX_LEN);
        Ok(Some(self.take(len)))
    }

    fn peek(&self, out: &mut [u8]) {
        let mut filled = 0;
        for chunk in &self.chunks {
            let n = chunk.len().min(out.len() - filled);
            out[filled..filled + n].copy_from_slice(&chunk[..n]);
            filled += n;
            if filled == out.len() {
                return;
            }
        }
    }

    fn skip(&mut self, mut n: usize) {
        self.buffered -= n;
        while n > 0 {
            let front = self.chunks.front_mut().expect("enough is buffered");
            if front.len() > n {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.chunks.pop_front();
        }
    }

    /// The next `len` bytes: a slice of the front chunk when it holds them
    /// all, else one exact-size copy.
    fn take(&mut self, len: usize) -> Bytes {
        if len == 0 {
            return Bytes::new();
        }
        self.buffered -= len;
        let front = self.chunks.front_mut().expect("enough is buffered");
        if front.len() >= len {
            let message = front.split_to(len);
            if front.is_empty() {
                self.chunks.pop_front();
            }
            return message;
        }
        let mut message = BytesMut::with_capacity(len);
        while message.len() < len {
            let front = self.chunks.front_mut().expect("enough is buffered");
            let n = front.len().min(len - message.len());
            message.put_slice(&front[..n]);
            front.advance(n);
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
        message.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend((payload.len() as u32).to_be_bytes());
        out.extend(payload);
        out
    }

    #[test]
    fn messages_are_cut_across_and_within_chunks() {
        let mut stream = framed(b"hello");
        stream.extend(framed(b""));
        stream.extend(framed(&[7u8; 40]));
        let mut assembler = MessageAssembler::default();
        let mut messages = Vec::new();
        // Chunks of 3 bytes: prefixes and bodies straddle chunk boundaries.
        for chunk in stream.chunks(3) {
            assembler.push(Bytes::copy_from_slice(chunk));
            while let Some(message) = assembler.take_message().unwrap() {
                messages.push(message);
            }
        }
        assert_eq!(messages, [&b"hello"[..], b"", &[7u8; 40][..]]);
        assert_eq!(assembler.buffered, 0);
        assert!(assembler.chunks.is_empty());
    }

    #[test]
    fn a_message_inside_one_chunk_is_not_copied() {
        let chunk = Bytes::from(framed(b"whole"));
        let mut assembler = MessageAssembler::default();
        assembler.push(chunk.clone());
        let message = assembler.take_message().unwrap().unwrap();
        assert_eq!(message.as_ptr(), chunk[PREFIX_LEN..].as_ptr());
    }

    #[test]
    fn compressed_messages_are_refused() {
        let mut assembler = MessageAssembler::default();
        assembler.push(Bytes::from_static(&[1, 0, 0, 0, 0]));
        assert!(assembler.take_message().is_err());
    }
}
