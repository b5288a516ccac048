//! Flight tickets that name one output partition of one producer task.

use prost::Message;

use crate::error::{QuiverError, Result};
use crate::proto::ShuffleTicket;

/// Encodes a shuffle/result ticket for Flight `do_get`.
pub fn encode_ticket(ticket: &ShuffleTicket) -> bytes::Bytes {
    bytes::Bytes::from(ticket.encode_to_vec())
}

/// Decodes a ticket made by [`encode_ticket`].
pub fn decode_ticket(bytes: &[u8]) -> Result<ShuffleTicket> {
    ShuffleTicket::decode(bytes).map_err(|source| QuiverError::BadTicket {
        reason: source.to_string(),
    })
}
