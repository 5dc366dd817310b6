//! The floor server's tonic codec: responses are written as pre-encoded
//! bytes, so nothing is encoded per stream.

use std::marker::PhantomData;

use bytes::{BufMut, Bytes};
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// A response written as given: a pre-encoded body and a short suffix of
/// fields that override the body's (protobuf keeps the last value of a
/// singular field), such as a fresh version and nonce.
#[derive(Debug, Clone)]
pub struct PreEncoded {
    pub body: Bytes,
    pub suffix: Bytes,
}

impl PreEncoded {
    pub fn len(&self) -> usize {
        self.body.len() + self.suffix.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Server codec of the floor: writes [`PreEncoded`] responses, decodes
/// requests as `D`.
pub struct PassThroughCodec<D>(PhantomData<fn() -> D>);

impl<D> Default for PassThroughCodec<D> {
    fn default() -> Self {
        PassThroughCodec(PhantomData)
    }
}

impl<D: Message + Default + Send + 'static> Codec for PassThroughCodec<D> {
    type Encode = PreEncoded;
    type Decode = D;
    type Encoder = PassThroughEncoder;
    type Decoder = ProstDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        PassThroughEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder(PhantomData)
    }
}

pub struct PassThroughEncoder;

impl Encoder for PassThroughEncoder {
    type Item = PreEncoded;
    type Error = Status;

    fn encode(&mut self, item: PreEncoded, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // A copy into the frame buffer is all tonic allows; no encoding.
        dst.reserve(item.len());
        dst.put_slice(&item.body);
        dst.put_slice(&item.suffix);
        Ok(())
    }
}

pub struct ProstDecoder<D>(PhantomData<fn() -> D>);

impl<D: Message + Default> Decoder for ProstDecoder<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        D::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("decoding failed: {e}")))
    }
}
