//! gRPC plumbing for the ADS service, below tonic's generated server: the
//! responses are [`WireMessage`]s whose shared chunks go to HTTP/2 as they
//! are. tonic's own encoder copies every message into a per-stream buffer
//! that keeps the capacity of the largest message for the life of the
//! stream; here a stream holds nothing between pushes.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use http_body::Frame;
use tokio::sync::mpsc;
use tonic::Status;
use tonic::body::Body;
use tonic::codec::{BufferSettings, Streaming};
use tonic_prost::ProstCodec;

use super::wire::WireMessage;

/// Largest request accepted (a `DiscoveryRequest` naming many resources).
const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// Starting size of a stream's request buffer (tonic's default is 8 KiB);
/// ACKs are a few hundred bytes.
const REQUEST_BUFFER_BYTES: usize = 1024;

/// The request stream of a gRPC call, decoded as `M`.
pub fn request_stream<M>(request: http::Request<Body>) -> Streaming<M>
where
    M: prost::Message + Default + Send + 'static,
{
    // A small starting buffer: it grows for a large request, and every
    // stream keeps its own for its whole life.
    let decoder = ProstCodec::<M, M>::raw_decoder(BufferSettings::new(REQUEST_BUFFER_BYTES, 0));
    Streaming::new_request(decoder, request.into_body(), None, Some(MAX_REQUEST_BYTES))
}

/// A streaming response: `200`, `content-type: application/grpc`, the
/// messages the stream's task sends, then the status as trailers (OK when the
/// task ends without one).
pub fn streaming_response(
    messages: mpsc::Receiver<Result<WireMessage, Status>>,
) -> http::Response<Body> {
    let mut response = http::Response::new(Body::new(ResponseBody {
        messages,
        chunks: VecDeque::new(),
        finished: false,
    }));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// A call this service does not serve.
pub fn unimplemented(path: &str) -> http::Response<Body> {
    Status::unimplemented(format!("{path} is not served here")).into_http()
}

struct ResponseBody {
    messages: mpsc::Receiver<Result<WireMessage, Status>>,
    /// What is left of the message being written.
    chunks: VecDeque<Bytes>,
    finished: bool,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if self.finished {
            return Poll::Ready(None);
        }
        match self.messages.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(message))) => {
                self.chunks = message.into_grpc_frame().into();
                let first = self.chunks.pop_front().expect("a frame has a header");
                Poll::Ready(Some(Ok(Frame::data(first))))
            }
            Poll::Ready(Some(Err(status))) => {
                self.finished = true;
                Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))))
            }
            Poll::Ready(None) => {
                self.finished = true;
                Poll::Ready(Some(Ok(Frame::trailers(trailers(&Status::ok(""))))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished && self.chunks.is_empty()
    }
}

fn trailers(status: &Status) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    if status.add_header(&mut trailers).is_err() {
        // Only a message that cannot be a header value gets here.
        trailers.insert("grpc-status", HeaderValue::from(status.code() as i32));
    }
    trailers
}
